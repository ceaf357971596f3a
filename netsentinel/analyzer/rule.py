"""One rule of the rules file (rules/default_rules.json, documented in
docs/ANALYZER.md), validated and compiled: its conditions, what it matches
and, for a scan rule, its windows. The code only knows the rule *kinds*:

  whitelist  the connection is trusted (filter_config.json, or the loader
             marked it): INFO, and nothing after it is evaluated
  match      conditions on the event ("when": ports, process names, exe
             paths, command line, destination CIDRs or known-bad lists)
  scan       one actor touching many distinct ports on a host ("measure":
             "ports") or many hosts ("measure": "hosts"), counted per pid,
             per executable and per session (a shell loop makes a process
             per probe) over a short and a long window, on every port;
             thresholds, windows and allowed executables come from
             llm_config.json; destinations an executable keeps coming back
             to (scan.Baselines) are not new and do not count
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Callable

from ..addresses import AddressError, canonical, parse_target
from ..levels import LEVELS, rank
from ..sightings import TARGET_SAMPLE
from .addrlist import AddressList
from .ipcache import parse_ip
from .reasons import TEMPLATE_FIELDS, template
from .ruleparse import RuleFileError, ports as _ports, strings as _strings
from .scan import DistinctWindow
from .scannames import at_least, group_value, who
from .verdict import Verdict

KINDS = ("whitelist", "match", "scan")
CONDITIONS = ("dport_in", "process_in", "exe_prefix", "exe_suffix", "cmdline_regex",
              "daddr_in", "daddr_in_lists", "uid_in", "signal_in", "exe_not_in")
# Event types rules judge ("on"); only connections have destinations and scans.
EVENT_KINDS = ("connection", "raw_socket")
DESTINATION_CONDITIONS = {"dport_in", "daddr_in", "daddr_in_lists"}
GROUP_FIELDS = ("pid", "ppid", "sid", "exe", "comm", "uid", "saddr")
# A scan's template fields as the LLM is shown them (no pids, no exact count).
ASKED = "asked"
MAX_CMDLINES, MAX_CMDLINE_TEXT = 4096, 1024   # command lines a cmdline_regex remembers
RULE_KEYS = {"id", "kind", "description", "level", "category", "confidence", "reason",
             "recommended_action", "settles", "when", "measure", "group_by", "ignore_ports", "on"}


class Rule:
    """One rule of the file, validated and compiled."""

    def __init__(self, raw: Any, index: int, base_dir: Path, extra_lists: list[str],
                 warn: Callable[[str], None]):
        where = f"rule #{index + 1}"
        if not isinstance(raw, dict):
            raise RuleFileError(f"{where}: must be an object")
        self.id = raw.get("id")
        if not isinstance(self.id, str) or not re.fullmatch(r"[a-z0-9][a-z0-9_-]{0,63}", self.id):
            raise RuleFileError(f"{where}: id must be lower-case letters, digits, - or _")
        where = f"rule {self.id!r}"
        unknown = set(raw) - RULE_KEYS
        if unknown:
            raise RuleFileError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
        self.kind = raw.get("kind", "match")
        # "default" is the verdict when nothing matches (the file's top-level "default").
        if self.kind not in KINDS and not (index < 0 and self.kind == "default"):
            raise RuleFileError(f"{where}: kind must be one of {', '.join(KINDS)}")
        self.on = raw.get("on", "connection")
        if self.on not in EVENT_KINDS:
            raise RuleFileError(f"{where}: on must be one of {', '.join(EVENT_KINDS)}")
        if self.on != "connection" and (self.kind != "match"
                                        or DESTINATION_CONDITIONS & set(raw.get("when") or {})):
            raise RuleFileError(f"{where}: a rule on {self.on} events is a match rule on the "
                                "process (no ports, destinations or scans)")
        self.level = raw.get("level", "INFO" if index < 0 else None)
        if self.level not in LEVELS:
            raise RuleFileError(f"{where}: level must be one of {', '.join(LEVELS)}")
        self.rank = rank(self.level)   # compared per verdict: looked up once
        self.category = raw.get("category") or self.id.replace("-", "_")
        conf = raw.get("confidence", 0.8)
        if isinstance(conf, bool) or not isinstance(conf, (int, float)) or not 0 <= conf <= 1:
            raise RuleFileError(f"{where}: confidence must be a number 0-1")
        self.confidence = float(conf)
        self.reason = raw.get("reason") or self.id
        self.template = template(self.reason)
        unknown = [name for _, name in self.template[0] if name not in TEMPLATE_FIELDS]
        if unknown:
            raise RuleFileError(f"{where}: reason uses unknown field {{{unknown[0]}}} "
                                f"(known: {', '.join(sorted(TEMPLATE_FIELDS))})")
        self.recommended_action = raw.get("recommended_action") or "review"
        self.settles = raw.get("settles", True)
        if not isinstance(self.settles, bool):
            raise RuleFileError(f"{where}: settles must be true or false")
        self.when = raw.get("when") or {}
        if not isinstance(self.when, dict):
            raise RuleFileError(f"{where}: when must be an object")
        if self.kind == "match" and not self.when:
            raise RuleFileError(f"{where}: a match rule needs at least one condition in when")
        self._compile_when(where, base_dir, extra_lists, warn)
        # Every condition on what ruleindex keys by: the key decides the rule.
        self.key_decided = self.kind == "match" and all(
            c is None for c in (self.cmdline_re, self.uids, self.signals, self.nets, self.lists))
        # A verdict of this rule but its reason, rule ids and asked reason
        # (rules._verdict copies it: cheaper than Verdict's __init__ per event).
        self.verdict_base = vars(Verdict(level=self.level, category=self.category,
                                         confidence=self.confidence, reason="",
                                         recommended_action=self.recommended_action,
                                         verdict_source="rules", rule_level=self.level))
        if self.kind == "scan":
            self.measure = raw.get("measure")
            if self.measure not in ("ports", "hosts"):
                raise RuleFileError(f"{where}: a scan rule needs measure \"ports\" or \"hosts\"")
            groups = raw.get("group_by") or [["pid"]]
            if not isinstance(groups, list) or not all(
                    isinstance(g, list) and g and all(f in GROUP_FIELDS for f in g) for g in groups):
                raise RuleFileError(f"{where}: group_by must be a list of field lists from "
                                    f"{', '.join(GROUP_FIELDS)}")
            self.group_by = tuple(tuple(g) for g in groups)
            self.ignore_ports = set(_ports(raw.get("ignore_ports", []), where))
            # (window, its length setting, its threshold setting) short then long.
            thr = "port" if self.measure == "ports" else "host"
            self.windows = ((DistinctWindow(1024, 512), "scan_window_seconds",
                             f"scan_{thr}_threshold"),
                            (DistinctWindow(256, 1024), "scan_long_window_seconds",
                             f"scan_long_{thr}_threshold"))

    def _compile_when(self, where: str, base_dir: Path, extra_lists: list[str], warn) -> None:
        w = self.when
        unknown = set(w) - set(CONDITIONS)
        if unknown:
            raise RuleFileError(f"{where}: unknown condition(s) {', '.join(sorted(unknown))} "
                                f"(known: {', '.join(CONDITIONS)})")
        self.ports = _ports(w["dport_in"], where) if "dport_in" in w else None
        self.procs = {p.lower() for p in _strings(w["process_in"], where)} if "process_in" in w else None
        self.exe_prefix = tuple(_strings(w["exe_prefix"], where)) if "exe_prefix" in w else None
        self.exe_suffix = tuple(_strings(w["exe_suffix"], where)) if "exe_suffix" in w else None
        self.cmdline_re, self._cmdline_hits = None, {}
        if "cmdline_regex" in w:
            try:
                self.cmdline_re = re.compile(w["cmdline_regex"], re.I)
            except (re.error, TypeError) as e:
                raise RuleFileError(f"{where}: cmdline_regex does not compile: {e}") from None
        self.nets = None
        if "daddr_in" in w:
            try:
                self.nets = [parse_target(x) for x in _strings(w["daddr_in"], where)]
            except AddressError as e:
                raise RuleFileError(f"{where}: {e}") from None
        self.lists = None
        if "daddr_in_lists" in w:
            files = [str(base_dir / f) if not os.path.isabs(f) else f
                     for f in _strings(w["daddr_in_lists"], where)] + list(extra_lists)
            self.lists = [AddressList(f, warn) for f in files]
        self.uids = set(w["uid_in"]) if "uid_in" in w else None
        self.signals = sorted(_strings(w["signal_in"], where)) if "signal_in" in w else None
        self.exe_not_in = set(_strings(w["exe_not_in"], where)) if "exe_not_in" in w else None

    def may_match(self, dport, has_signals: bool, comm, exe) -> bool:
        """The conditions that hold or fail on an event's port, process
        name, executable and whether it has signals alone (ruleindex
        remembers them per such key; match() checks them first)."""
        exe = exe or ""
        if self.ports is not None and dport not in self.ports:
            return False
        if self.signals is not None and not has_signals:
            return False
        if self.procs is not None and (comm or "").lower() not in self.procs \
                and exe.rpartition("/")[2].lower() not in self.procs:   # basename, without a call
            return False
        if self.exe_prefix is not None and not exe.startswith(self.exe_prefix):
            return False
        if self.exe_suffix is not None and not exe.endswith(self.exe_suffix):
            return False
        return self.exe_not_in is None or exe not in self.exe_not_in

    def match(self, ev: dict) -> dict | None:
        """Template fields when every condition holds, else None."""
        have = signals_of(ev)
        if not self.may_match(ev.get("dport"), bool(have), ev.get("comm"), ev.get("exe")):
            return None
        return self.match_rest(ev, have)

    def key_fields(self, dport) -> dict:
        """The template fields a key-decided rule gives (ruleindex keeps them)."""
        return {"port_label": self.ports[dport] or f"port {dport}"} if self.ports is not None else {}

    def match_rest(self, ev: dict, have: dict) -> dict | None:
        """match() for an event may_match() already passed (ruleindex
        picked the rule for it); have: its signals ({} for none)."""
        fields: dict = {}
        if self.ports is not None:
            fields["port_label"] = self.ports[ev["dport"]] or f"port {ev['dport']}"
        if self.cmdline_re is not None and not self._cmdline_hit(ev.get("cmdline") or ""):
            return None
        if self.uids is not None and ev.get("uid") not in self.uids:
            return None
        if self.signals is not None:
            # The loader's evidence (docs/events.md#signals): name -> one line.
            hit = next((s for s in self.signals if s in have), None)
            if hit is None:
                return None
            fields["signal"] = f"{hit}: {have[hit]}"
        if self.nets is not None:
            hit = _in_nets(ev["daddr"], self.nets)
            if hit is None:
                return None
            fields["entry"] = hit
        if self.lists is not None:
            for lst in self.lists:
                hit = lst.lookup(ev["daddr"])
                if hit:
                    fields["entry"] = hit
                    break
            else:
                return None
        return fields

    def groups_of(self, ev: dict) -> list[tuple]:
        """The event's groups, (fields, values) for each of group_by that
        says something (scan rules with the same group_by share them)."""
        out = []
        get = ev.get
        for fields in self.group_by:
            # exe has a stand-in (group_value); the other fields are the event's own
            values = tuple(group_value(ev, f) for f in fields) if "exe" in fields \
                else tuple(map(get, fields))
            if None not in values:   # (JSON values: none equals None but None)
                out.append((fields, values))
            # else e.g. saddr is null in kprobe mode: that grouping says nothing
        return out

    def _cmdline_hit(self, cmdline: str) -> bool:
        """cmdline_regex on a command line, remembered per text: a process's
        events repeat it, and a search costs more the longer it is."""
        hit = self._cmdline_hits.get(cmdline)
        if hit is None:
            hit = self.cmdline_re.search(cmdline) is not None
            if len(cmdline) <= MAX_CMDLINE_TEXT:   # bounded memory
                if len(self._cmdline_hits) >= MAX_CMDLINES:
                    self._cmdline_hits.clear()
                self._cmdline_hits[cmdline] = hit
        return hit

    def scan(self, ev: dict, t: float, cfg: dict, groups: list | None = None
             ) -> tuple[dict, tuple] | None:
        """(template fields, (group fields, values, sample)) when a group
        crossed a threshold: the first group of group_by, short window first.
        groups: groups_of(ev), when the caller made them already."""
        if self.measure == "ports":
            sub, value = ev["daddr"], ev["dport"]
        else:
            if ev["dport"] in self.ignore_ports:
                return None
            sub, value = None, ev["daddr"]
        best = None
        (short, short_w, short_n), (long_, long_w, long_n) = self.windows
        short_w, short_n, long_w, long_n = cfg[short_w], cfg[short_n], cfg[long_w], cfg[long_n]
        for group in self.groups_of(ev) if groups is None else groups:
            n = short.observe(group, t, sub, value, short_w)
            if n >= short_n and best is None:
                best = _scan_hit(ev, group, short, sub, n, short_w, short_n)
            n = long_.observe(group, t, sub, value, long_w)
            if n >= long_n and best is None:
                best = _scan_hit(ev, group, long_, sub, n, long_w, long_n)
        return best


def _scan_hit(ev: dict, group: tuple, win, sub, n: int, window, threshold) -> tuple[dict, tuple]:
    """Rule.scan's answer for a group past a window's threshold."""
    fields, values = group
    sample = win.sample(group, sub, TARGET_SAMPLE)
    return ({"distinct": n, "window": f"{window:g}", "threshold": threshold,
             "sample": ", ".join(map(str, sample[:12])), "host": ev["daddr"],
             "who": who(fields, ev), ASKED: {"who": who(fields, ev, pids=False),
                                             "distinct": at_least(n, threshold)}},
            (fields, values, tuple(sample)))


def signals_of(ev: dict) -> dict:
    """An event's signals (docs/events.md#signals), {} when it has none."""
    have = ev.get("signals")
    return have if isinstance(have, dict) else {}


def _in_nets(addr: str, nets: list) -> str | None:
    ip = parse_ip(addr)
    if ip is None:
        return None
    for n in nets:
        if n.version == ip.version and ip in n:
            return canonical(n)
    return None
