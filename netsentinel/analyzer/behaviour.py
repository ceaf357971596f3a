"""Judging what a process *is* doing rather than which port it talks to
(issue 12). The loader reports raw/packet sockets as `raw_socket` events and
attaches evidence ("signals") to connections (docs/events.md); both are judged
by ordinary rules of rules/default_rules.json:

  - rules with "on": "raw_socket" judge raw_socket events (process conditions
    only: process_in, exe_prefix/suffix, exe_not_in, cmdline_regex, uid_in);
  - "signal_in" conditions on connection rules match the loader's signals
    (stdio_socket: a shell whose stdin/stdout is a TCP socket; parent_service).

raw_socket events are decided by the rules alone (there is no destination for
an LLM to weigh) and merged into one threat per process identity (uid and
executable): a scanner opening several sockets, or run again, is one threat.
"""

from __future__ import annotations

from .rules import RuleEngine, RuleOutcome, _verdict
from .verdict import rank

_RAW_TYPES = {"pid": int, "uid": int, "comm": str, "family": str, "sock_type": str,
              "protocol": int, "protocol_name": str}
_RAW_NULLABLE = {"ppid": int, "exe": str, "cmdline": str, "proc_error": str, "tid": int, "fd": int}


def invalid_raw_socket(ev: dict) -> str | None:
    """Why a raw_socket event cannot be judged, or None."""
    for fields, nullable in ((_RAW_TYPES, False), (_RAW_NULLABLE, True)):
        for k, t in fields.items():
            v = ev.get(k)
            if (v is None and nullable) or (isinstance(v, t) and not isinstance(v, bool)):
                continue
            return f"{k} must be {t.__name__}{' or null' if nullable else ''}, got {v!r}"
    return None


def process_key(ev: dict) -> str:
    """One pending threat per process identity and event kind."""
    return f"proc|{ev.get('type')}|uid={ev.get('uid')}|{ev.get('exe') or 'comm:' + str(ev.get('comm'))}"


def judge_raw_socket(engine: RuleEngine, ev: dict) -> RuleOutcome:
    matches = [(r, f) for r in engine.rules if r.on == "raw_socket"
               for f in [r.match(ev)] if f is not None]
    if not matches:
        v = _verdict(engine.default, ev, {}, [])
        v.category = "raw_socket"
        v.reason = (f"{ev.get('comm')} ({ev.get('exe')}) opened a {ev.get('family')} "
                    f"{ev.get('sock_type')} socket; no rule matched (an allowed tool)")
        return RuleOutcome(v, True, False, None, process_key(ev))
    top = max(rank(r.level) for r, _ in matches)
    rule, fields = next((r, f) for r, f in matches if rank(r.level) == top)
    v = _verdict(rule, ev, fields, [r.id for r, _ in matches])
    return RuleOutcome(v, True, False, None, process_key(ev))
