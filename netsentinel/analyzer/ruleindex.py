"""Which connection rules may match an event: the rules in file order,
less those whose port, signal, process name or executable condition
cannot hold for it (Rule.may_match), remembered per (port, has signals,
comm, exe). A host runs a few hundred programs, so the keys repeat and most
rules are never called for most events (a candidate then checks only
what the key does not hold, the command line, uid, signals and
destination: Rule.match_rest).

A rule whose every condition is on the key (ports, names, executables:
most rules) is decided by the key alone: the index keeps its template
fields (a port's label) and evaluate() takes them without a call."""

from __future__ import annotations

from .rule import signals_of

MAX_INDEXED = 8192        # keys remembered; then the index starts afresh (bounded memory)
MAX_INDEXED_TEXT = 1024   # longer comm + exe are not remembered (computed each time)
# What evaluate() does with a candidate (a step's code).
DECIDED, REST, WHITELIST, SCAN = 0, 1, 2, 3


class RuleIndex:
    def __init__(self, rules: list):
        self.rules = [r for r in rules if r.on == "connection"]
        self._by_key: dict = {}

    def candidates(self, ev: dict, have: dict | None = None) -> tuple:
        """The connection rules that may match ev, in file order (have: its
        signals, when the caller read them already)."""
        return tuple(rule for rule, _, _ in self.steps(ev, signals_of(ev) if have is None else have))

    def steps(self, ev: dict, have: dict) -> tuple:
        """The candidates as (rule, code, fields): code DECIDED (fields: its
        template fields, shared: never changed), REST (match_rest decides),
        WHITELIST or SCAN."""
        key = (ev["dport"], bool(have), ev.get("comm"), ev.get("exe"))
        got = self._by_key.get(key)
        if got is None:
            got = tuple(_step(r, key[0]) for r in self.rules if r.may_match(*key))
            if len(key[3] or "") + len(key[2] or "") <= MAX_INDEXED_TEXT:
                if len(self._by_key) >= MAX_INDEXED:
                    self._by_key.clear()
                self._by_key[key] = got
        return got


def _step(rule, dport) -> tuple:
    if rule.kind == "whitelist":
        return rule, WHITELIST, None
    if rule.kind == "scan":
        return rule, SCAN, None
    if rule.key_decided:
        return rule, DECIDED, rule.key_fields(dport)
    return rule, REST, None
