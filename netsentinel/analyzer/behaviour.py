"""Judging what a process *is* doing rather than which port it talks to
(issue 12). The loader reports raw/packet sockets as `raw_socket` events and
attaches evidence ("signals") to connections (docs/events.md); both are judged
by ordinary rules of rules/default_rules.json:

  - rules with "on": "raw_socket" judge raw_socket events (process conditions
    only: process_in, exe_prefix/suffix, exe_not_in, cmdline_regex, uid_in);
  - "signal_in" conditions on connection rules match the loader's signals
    (stdio_socket: a shell whose stdin/stdout is a TCP socket; parent_service).

`egress` events (what raw sockets sent) are judged by EgressJudge below,
`udp` events (what ordinary UDP sockets sent) by analyzer/udp.py.

raw_socket events are decided by the rules alone (there is no destination for
an LLM to weigh) and merged into one threat per process identity (uid and
executable): a scanner opening several sockets, or run again, is one threat.
"""

from __future__ import annotations

from .eventcheck import BadLine
from .keys import executable_key
from .rules import RuleEngine, RuleOutcome, _event_time, _verdict
from .scan import SlidingDistinct
from .udp import UdpJudge
from .verdict import Verdict, rank

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


def judge_raw_socket(engine: RuleEngine, ev: dict) -> RuleOutcome:
    matches = [(r, f) for r in engine.rules if r.on == "raw_socket"
               for f in [r.match(ev)] if f is not None]
    if not matches:
        v = _verdict(engine.default, ev, {}, [])
        v.category = "raw_socket"
        v.reason = (f"{ev.get('comm')} ({ev.get('exe')}) opened a {ev.get('family')} "
                    f"{ev.get('sock_type')} socket; no rule matched (an allowed tool)")
        return RuleOutcome(v, True, False, None, executable_key(ev))
    top = max(rank(r.level) for r, _ in matches)
    rule, fields = next((r, f) for r, f in matches if rank(r.level) == top)
    v = _verdict(rule, ev, fields, [r.id for r, _ in matches])
    return RuleOutcome(v, True, False, None, executable_key(ev))


class EgressJudge:
    """`egress` events (what raw/packet sockets sent, per socket and window):
    distinct ports on one host and distinct hosts, per sending process, over
    the scan rules' sliding window (scan_window_seconds, scan_port_threshold,
    scan_host_threshold from llm_config.json, as for connections). Crossing
    either is a CRITICAL port scan / host sweep naming the process, merged
    with that process's raw_socket threat (same key): one attack, one threat."""

    def __init__(self):
        self.ports = SlidingDistinct()
        self.hosts = SlidingDistinct()

    def judge(self, ev: dict, cfg: dict) -> RuleOutcome:
        ident = ev.get("exe") or ev.get("comm") or f"socket {ev.get('cookie')}"
        t, window = _event_time(ev), cfg["scan_window_seconds"]
        top, hosts = (0, None, []), 0
        for tg in ev["targets"]:
            wc = None
            for proto in ("tcp", "udp"):
                for port in tg[f"{proto}_ports"]:
                    wc = self.ports.observe((ident,), t, tg["daddr"], (proto, port), window)
            # A window can list fewer ports than it counted (MAX_PORTS).
            n = max(wc.distinct if wc else 0, tg["tcp_port_count"] + tg["udp_port_count"])
            if n > top[0]:
                top = (n, tg["daddr"], [p for _, p in wc.sample] if wc else [])
            hosts = self.hosts.observe((ident,), t, None, tg["daddr"], window).distinct
        if ev.get("attribution"):
            who = f"{ev.get('comm')} ({ev.get('exe')}, pid {ev.get('pid')})"
        else:
            cands = [c for c in ev.get("candidates") or [] if isinstance(c, dict)]
            who = f"an unidentified process (socket cookie {ev.get('cookie')}" + (
                "; exited raw-socket openers: " + ", ".join(
                    f"{c.get('comm')} pid {c.get('pid')}" for c in cands[:5]) if cands else "") + ")"
        if top[0] >= cfg["scan_port_threshold"]:
            level, category = "CRITICAL", "port_scan"
            reason = (f"raw port scan: {who} sent to {top[0]} distinct ports on {top[1]} within "
                      f"{window:g}s without connect() (threshold {cfg['scan_port_threshold']}; e.g. "
                      f"{', '.join(map(str, top[2]))})")
        elif hosts >= cfg["scan_host_threshold"]:
            level, category = "CRITICAL", "host_sweep"
            reason = (f"raw host sweep: {who} sent to {hosts} distinct hosts within {window:g}s "
                      f"without connect() (threshold {cfg['scan_host_threshold']})")
        else:
            level, category = "INFO", "raw_egress"
            reason = f"{who} sent {ev.get('packets')} packets to {ev.get('hosts')} host(s) from a raw socket"
        v = Verdict(level=level, category=category, confidence=0.95 if level == "CRITICAL" else 0.5,
                    reason=reason, recommended_action="stop the process; it sends packets that bypass "
                    "connect() monitoring" if level == "CRITICAL" else "none",
                    rule_ids=["egress-fanout"] if level == "CRITICAL" else [], rule_level=level)
        key = executable_key(ev, "raw_socket") if ev.get("attribution") \
            else f"egress|cookie={ev.get('cookie')}"
        return RuleOutcome(v, True, False, None, key)


def invalid_egress(ev: dict) -> str | None:
    """Why an egress event cannot be judged, or None."""
    targets = ev.get("targets")
    if not isinstance(targets, list) or len(targets) > 64:
        return f"targets must be a list of at most 64, got {str(targets)[:60]!r}"
    for tg in targets:
        if not isinstance(tg, dict) or not isinstance(tg.get("daddr"), str):
            return "each target needs a daddr"
        for k in ("tcp_ports", "udp_ports"):
            if not isinstance(tg.get(k), list) or len(tg[k]) > 256 or not all(
                    isinstance(p, int) and not isinstance(p, bool) for p in tg[k]):
                return f"target {k} must be a list of at most 256 integers"
        for k in ("tcp_port_count", "udp_port_count"):
            if not isinstance(tg.get(k), int) or isinstance(tg.get(k), bool):
                return f"target {k} must be an integer"
    return None


class Behaviour:
    """The analyzer's entry point for raw_socket, egress and udp events."""

    def __init__(self, engine: RuleEngine):
        self.engine = engine
        self.egress = EgressJudge()
        self.udp = UdpJudge()

    def judge(self, ev: dict, cfg: dict) -> RuleOutcome | None:
        """The outcome to record (None: an unremarkable egress window, not
        recorded: a ping would write one a second), or BadLine."""
        if ev["type"] == "udp":
            return self.udp.judge(ev, cfg)   # None: nothing remarkable this window
        if ev["type"] == "raw_socket":
            why = invalid_raw_socket(ev)
            if why is None:
                return judge_raw_socket(self.engine, ev)
        else:
            why = invalid_egress(ev)
            if why is None:
                out = self.egress.judge(ev, cfg)
                return out if out.verdict.level != "INFO" else None
        raise BadLine(f"{ev['type']} event: {why}")
