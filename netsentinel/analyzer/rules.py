"""The rule engine: fast, offline, deterministic. Rules are data, in a JSON
file (rules/default_rules.json, documented in docs/ANALYZER.md); each is a
rule.Rule, and this judges an event with them all.

Every matching rule contributes; the verdict is the highest level. It is
"settled" (the LLM is not asked, unless llm_scope is "all") when a rule at
that level says "settles": true.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..paths import PROJECT_ROOT
from .eventcheck import event_seconds
from .keys import process_key
from .reasons import render
from .rule import ASKED, Rule, RuleFileError
from .ruleindex import DECIDED, MAX_INDEXED, MAX_INDEXED_TEXT, REST, WHITELIST, RuleIndex
from .scan import Baselines, ProcessHistory
from .scannames import sweep_target
from .verdict import Verdict

_new = object.__new__
DEFAULT_RULES_PATH = PROJECT_ROOT / "rules" / "default_rules.json"


@dataclass
class RuleOutcome:
    verdict: Verdict
    settled: bool
    whitelisted: bool
    target: str | None
    dedupe_key: str | None
    targets: tuple = ()     # a sweep's hosts in its window (the threat lists them)


class RuleEngine:
    def __init__(self, path: str | os.PathLike = DEFAULT_RULES_PATH, *,
                 extra_lists: list[str] | None = None,
                 warn: Callable[[str], None] = lambda m: None):
        self.path = Path(path)
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
        except OSError as e:
            raise RuleFileError(f"{self.path}: {e.strerror}") from None
        except json.JSONDecodeError as e:
            raise RuleFileError(f"{self.path}: invalid JSON at line {e.lineno} column {e.colno}: "
                                f"{e.msg}") from None
        if not isinstance(raw, dict) or not isinstance(raw.get("rules"), list):
            raise RuleFileError(f"{self.path}: must be an object with a \"rules\" list")
        try:
            self.rules = [Rule(r, i, self.path.parent, extra_lists or [], warn)
                          for i, r in enumerate(raw["rules"])]
            ids = [r.id for r in self.rules]
            dup = {i for i in ids if ids.count(i) > 1}
            if dup:
                raise RuleFileError(f"duplicate rule id(s) {', '.join(sorted(dup))}")
            default = raw.get("default") or {}
            if not isinstance(default, dict):
                raise RuleFileError("default must be an object")
            self.default = Rule(dict(default, id="default", kind="default"), -1,
                                self.path.parent, [], warn)
        except RuleFileError as e:
            raise RuleFileError(f"{self.path}: {e}") from None
        self.history = ProcessHistory()
        self.baselines = Baselines()
        self.index = RuleIndex(self.rules)   # which connection rules may match an event
        shared: dict = {}   # scan rules grouping alike share their groups per event
        for r in self.rules:
            if r.kind == "scan":
                r.group_by = shared.setdefault(r.group_by, r.group_by)
        self._wl_of, self._wl_why = None, {}   # whitelist decisions by key (_whitelisted)
        self._allowed_of, self._allowed = None, frozenset()   # scan_allowed_exes (_scans_apply)

    def memory(self) -> dict:
        """What the bounded detectors hold and have forgotten (for the status)."""
        wins = [w for r in self.rules if r.kind == "scan" for w, _, _ in r.windows]
        return {"scan_groups": sum(len(w) for w in wins),
                "scan_groups_evicted": sum(w.evicted for w in wins),
                "scan_values_evicted": sum(w.values_evicted for w in wins),
                "baseline_executables": len(self.baselines),
                "baseline_learned": self.baselines.learned,
                "baseline_evicted": self.baselines.evicted,
                "processes_tracked": len(self.history), "processes_evicted": self.history.evicted}

    def _scans_apply(self, ev: dict, t: float, cfg: dict) -> bool:
        """Do the scan rules count this connection? Not for an allowed
        executable, nor for a destination in its executable's baseline."""
        exe = ev.get("exe")
        if exe:
            allowed = cfg["scan_allowed_exes"]
            if allowed is not self._allowed_of:   # as a set, once per settings
                self._allowed_of, self._allowed = allowed, frozenset(allowed)
            if exe in self._allowed:
                return False
        # By comm, which the kernel always gives (exe is unknown for a
        # process gone before /proc was read).
        ident = (ev.get("uid"), ev.get("comm"))
        return not self.baselines.known(ident, (ev["daddr"], ev["dport"]), t)

    def evaluate(self, ev: dict, cfg: dict, whitelist=None) -> RuleOutcome:
        """Judge one connection event (and remember it for scan windows and history)."""
        try:   # _event_time, without a call
            t = event_seconds(ev.get("ts")) or time.time()
        except (ValueError, TypeError):
            t = time.time()
        matches: list[tuple[Rule, dict]] = []
        have = ev.get("signals")   # signals_of, without a call
        if not isinstance(have, dict):
            have = {}
        target, scans, shared = ev["daddr"], None, None
        for rule, code, fields in self.index.steps(ev, have):
            if code is DECIDED:   # most rules: the index's key decided it
                matches.append((rule, fields))
                continue
            if code is REST:
                fields = rule.match_rest(ev, have)   # the index checked may_match
                if fields is not None:
                    matches.append((rule, fields))
                continue
            if code is WHITELIST:
                why = ev.get("whitelisted") or (self._whitelisted(whitelist, ev)
                                                if whitelist is not None else None)
                if why:
                    v = _verdict(rule, ev, {"why": why}, [rule.id])
                    return RuleOutcome(v, True, True, None, None)
                continue
            # a scan rule
            if scans is None:
                scans = self._scans_apply(ev, t, cfg)
            if not scans:
                continue
            if shared is None or shared[0] is not rule.group_by:   # the event's groups, once
                shared = (rule.group_by, rule.groups_of(ev))
            hit = rule.scan(ev, t, cfg, shared[1])
            if hit is None:
                continue
            fields, group = hit
            if rule.measure == "hosts":
                swept_net, swept = sweep_target(ev["daddr"], group[-1]), group[-1]
            matches.append((rule, fields))
        self.history.add(ev.get("pid"), ev.get("ts"), target, ev["dport"])
        if not matches:
            return RuleOutcome(_verdict(self.default, ev, {}, []), self.default.settles, False,
                               target, process_key(ev))
        rule, fields = matches[0]
        settled = rule.settles
        if len(matches) > 1:   # the highest level; settled when a rule at it settles
            named = rule.kind == "scan"
            for r, f in matches:
                if r.rank > rule.rank:
                    rule, fields, settled, named = r, f, r.settles, r.kind == "scan"
                elif r.rank == rule.rank:
                    settled = settled or r.settles
                    # A scan names the threat (one scan is one threat) over a rule that also matched.
                    if not named and r.kind == "scan":
                        rule, fields, named = r, f, True
        v = _verdict(rule, ev, fields, [rule.id] if len(matches) == 1 else [r.id for r, _ in matches])
        if rule.kind == "scan" and rule.measure == "hosts":
            return RuleOutcome(v, settled, False, swept_net, process_key(ev), swept)
        return RuleOutcome(v, settled, False, target, process_key(ev))

    def _whitelisted(self, whitelist, ev: dict) -> str | None:
        """whitelist.match for the event. With no trusted networks it is
        decided by port, comm and exe alone: remembered per those (and
        whitelist: a reload is a new object)."""
        key = (ev["dport"], ev.get("comm"), ev.get("exe"))
        if whitelist.networks:
            return whitelist.match(daddr=ev["daddr"], dport=key[0], comm=key[1], exe=key[2])
        if whitelist is not self._wl_of:
            self._wl_of, self._wl_why = whitelist, {}
        why = self._wl_why.get(key, _UNKNOWN)
        if why is _UNKNOWN:
            why = whitelist.match(daddr=ev["daddr"], dport=key[0], comm=key[1], exe=key[2])
            if len(key[1] or "") + len(key[2] or "") <= MAX_INDEXED_TEXT:
                if len(self._wl_why) >= MAX_INDEXED:
                    self._wl_why.clear()
                self._wl_why[key] = why
        return why


_UNKNOWN = object()


def _verdict(rule: Rule, ev: dict, fields: dict, rule_ids: list) -> Verdict:
    # Verdict's fields from the rule's verdict_base, not through its __init__ (per event).
    asked = fields.get(ASKED)
    d = rule.verdict_base.copy()
    d["reason"] = render(rule.template, ev, fields)
    d["rule_ids"] = rule_ids
    if asked is not None:
        d["asked_reason"] = render(rule.template, ev, {**fields, **asked})
    v = _new(Verdict)
    v.__dict__ = d
    return v


def _event_time(ev: dict) -> float:
    try:
        return event_seconds(ev.get("ts")) or time.time()
    except (ValueError, TypeError):
        return time.time()
