"""Which connection rules may match an event: the rules in file order,
less those whose port, signal, process name or executable condition
cannot hold for it, remembered per (port, has signals, comm, exe). A host
runs a few hundred programs, so the keys repeat and most rules are never
called for most events (a candidate still checks all its conditions:
what the key does not hold, the command line, uid and destination, is
left to Rule.match)."""

from __future__ import annotations

MAX_INDEXED = 8192        # keys remembered; then the index starts afresh (bounded memory)
MAX_INDEXED_TEXT = 1024   # longer comm + exe are not remembered (computed each time)


def may_match(rule, dport, has_signals: bool, comm, exe) -> bool:
    """Can `rule` match an event with these values?"""
    exe = exe or ""
    if rule.ports is not None and dport not in rule.ports:
        return False
    if rule.signals is not None and not has_signals:
        return False
    if rule.procs is not None and (comm or "").lower() not in rule.procs \
            and exe.rpartition("/")[2].lower() not in rule.procs:   # basename, without a call
        return False
    if rule.exe_prefix is not None and not exe.startswith(rule.exe_prefix):
        return False
    if rule.exe_suffix is not None and not exe.endswith(rule.exe_suffix):
        return False
    return rule.exe_not_in is None or exe not in rule.exe_not_in


class RuleIndex:
    def __init__(self, rules: list):
        self.rules = [r for r in rules if r.on == "connection"]
        self._by_key: dict = {}

    def candidates(self, ev: dict) -> tuple:
        """The connection rules that may match ev, in file order."""
        signals = ev.get("signals")
        key = (ev["dport"], isinstance(signals, dict) and bool(signals), ev.get("comm"), ev.get("exe"))
        got = self._by_key.get(key)
        if got is None:
            got = tuple(r for r in self.rules if may_match(r, *key))
            if len(key[3] or "") + len(key[2] or "") <= MAX_INDEXED_TEXT:
                if len(self._by_key) >= MAX_INDEXED:
                    self._by_key.clear()
                self._by_key[key] = got
        return got
