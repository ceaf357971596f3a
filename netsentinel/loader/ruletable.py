"""The loader's XDP filter-rule table: rule_commands.json → kernel → filter_rules.json.

Commands (written by people, or by the dashboard: its filter rules page and
an approved rule_proposals.json entry; the analyzer only proposes, in
rule_proposals.json. Consumed here through cmdqueue.CommandQueue exactly like
ban commands):
    {"action": "add_rule", "rule": {...filterrules rule...}}
    {"action": "remove_rule", "id": "ssdp-reflection"}
An add whose rule is invalid, or that would make the whole set invalid, is
refused with its reason (stderr, a rule_rejected event,
rule_commands.rejected.json) and the set in the kernel is left as it was.
filter_rules.json is written only here and restored at start.
"""

from __future__ import annotations

import time
from typing import Any, Callable

from .. import dropdir
from .cmdqueue import CommandQueue
from ..filterrules import RuleRefused, validate_rules
from ..netinfo import Protected
from ..records import FILTER_RULES, RULE_COMMANDS, RULE_COMMANDS_REJECTED
from ..store import RecordsStore
from ..timefmt import is_expired, utc_now_iso
from .refusals import Refusals


class RuleTable:
    def __init__(self, store: RecordsStore, enforcer, protected: Callable[[], Protected],
                 ssh_ports: Callable[[], list], emit: Callable[..., Any],
                 warn: Callable[[str], None], clock: Callable[[], float] = time.time):
        self.store = store
        self.enforcer = enforcer
        self.protected = protected
        self.ssh_ports = ssh_ports
        self.emit = emit
        self.warn = warn
        self.clock = clock
        self.rules: list[dict] = []   # as stored, in evaluation order
        self._restoring = False       # see restore()
        self._refuse = Refusals(store, RULE_COMMANDS_REJECTED, "rule_rejected", "rule command",
                                warn, emit)
        self.queue = CommandQueue(store, RULE_COMMANDS, self._handle, self._refuse, self._save)
        self._refuse.ref = lambda: self.queue.current_ref
        dropdir.ensure(store.root, RULE_COMMANDS)

    # ------------------------------------------------------------ load
    def _load(self, candidate: list[dict]) -> None:
        """Validate the whole set, then load it; raises RuleRefused untouched.
        While restoring, only validate: restore() loads the outcome once."""
        rules = validate_rules([_kernel_view(r) for r in candidate], self.protected(), self.ssh_ports())
        if self._restoring:
            self.rules = candidate
            return
        counted = self.enforcer.rule_hits() if self.rules else {}
        self.enforcer.set_rules(rules)
        # The kernel's per-slot counters restart at the new load: carry the
        # hits each rule has had so far in hits_base.
        for r in candidate:
            r["hits_base"] = r.get("hits_base", 0) + counted.get(r["id"], 0)
        self.rules = candidate

    def _load_tolerant(self, candidate: list[dict], why: str) -> None:
        """Load a set, or if the set as a whole is refused (a rule the
        host's addresses now make unsafe), as much of it as passes, one by
        one, refusing the rest with the reason: never leave the old set in
        the kernel because one other rule went bad."""
        try:
            self._load(candidate)
            return
        except RuleRefused as e:
            self.warn(f"{why}: {e}; loading the rules one by one")
        accepted: list[dict] = []
        for r in candidate:  # validate only; the kernel set changes once, below
            try:
                validate_rules([_kernel_view(x) for x in accepted + [r]], self.protected(),
                               self.ssh_ports())
                accepted.append(r)
            except RuleRefused as e2:
                self._refuse({"action": "add_rule", "rule": r}, f"{why}: {e2}")
        self._load(accepted)

    def restore(self) -> int:
        """filter_rules.json plus the commands still queued, into the kernel as
        one set. A loader killed after putting a command's rule in the (pinned)
        map but before saving the file leaves the command queued; loading the
        file first and the command after would take that rule out of the map
        for as long as the start takes in between. Returns how many rules the
        file gave back."""
        saved = self.store.read(FILTER_RULES, default={})
        raws = saved.get("rules", []) if isinstance(saved, dict) else []
        now = self.clock()
        keep = [r for r in raws if isinstance(r, dict) and not is_expired(r, now)]
        for r in keep:
            r["hits_base"] = r.get("hits", 0)
        self._restoring = True
        try:
            self._load_tolerant(keep, "restore")
            restored = len(self.rules)
            # Saves the set (commit) before the kernel has it: the file is
            # what the next start loads, so a crash here loses nothing.
            self.queue.process()
        finally:
            self._restoring = False
        self._load_tolerant(self.rules, "restore")
        self._save()
        return restored

    # ------------------------------------------------------------ commands
    def process_commands(self) -> int:
        return self.queue.process()

    def _handle(self, raw: Any) -> None:
        if not isinstance(raw, dict) or raw.get("action") not in ("add_rule", "remove_rule"):
            self._refuse(raw, "a rule command is {\"action\": \"add_rule\", \"rule\": {...}} "
                              "or {\"action\": \"remove_rule\", \"id\": ...}")
            return
        if raw["action"] == "remove_rule":
            rid = raw.get("id")
            left = [r for r in self.rules if r.get("id") != rid]
            if len(left) == len(self.rules):
                self.emit("rule", id=rid, result="not_found")
                return
            self._load_tolerant(left, f"remove_rule {rid}")
            self.emit("rule", id=rid, result="removed")
            return
        rule = raw.get("rule")
        if not isinstance(rule, dict):
            self._refuse(raw, "add_rule needs a \"rule\" object")
            return
        try:
            parsed = validate_rules([_kernel_view(rule)], self.protected(), self.ssh_ports())[0]
            stored = parsed.to_json()
            stored.update(created_at=utc_now_iso(self.clock()), hits=0,
                          source=rule.get("source") or raw.get("source") or "manual")
            ttl = parsed.extra.get("ttl_seconds")  # checked by parse_rule: 1 s to 10 years
            if ttl is not None:
                stored["expires_at"] = utc_now_iso(self.clock() + ttl)
            replaced = any(r["id"] == stored["id"] for r in self.rules)
            new = [stored if r["id"] == stored["id"] else r for r in self.rules]
            if not replaced:
                new.append(stored)
            self._load(new)
        except RuleRefused as e:
            self._refuse(raw, str(e))
            return
        self.emit("rule", id=stored["id"], result="updated" if replaced else "applied", rule=stored)

    # ------------------------------------------------------------ upkeep
    def expire(self) -> int:
        now = self.clock()
        due = [r for r in self.rules if is_expired(r, now)]
        if due:
            self._load_tolerant([r for r in self.rules if not is_expired(r, now)], "expiry")
            for r in due:
                self.emit("rule", id=r["id"], result="expired")
            self._save()
        return len(due)

    def sync_hits(self) -> None:
        hits = self.enforcer.rule_hits() if self.rules else {}
        changed = False
        for r in self.rules:
            h = r.get("hits_base", 0) + hits.get(r["id"], 0)
            if h != r.get("hits"):
                r["hits"] = h
                changed = True
        if changed:
            self._save()

    def _save(self) -> None:
        self.store.write(FILTER_RULES, {"rules": self.rules, "updated_at": utc_now_iso()})


def _kernel_view(stored: dict) -> dict:
    """The rule fields filterrules understands (drop bookkeeping fields)."""
    return {k: v for k, v in stored.items() if k not in ("hits", "hits_base", "created_at")}

