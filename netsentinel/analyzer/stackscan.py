"""Inbound port scans seen from the kernel's drops (issue 17, slice 3).

A SYN (or UDP datagram) to a closed port is dropped by the stack with reason
NO_SOCKET; the loader's `drops` events carry them per source, destination
and port. Many distinct ports from one source within SCAN_WINDOW_S is a
scan, however slowly it is sent: the flood thresholds (floods.py) need a
rate, this needs only breadth. TCP_RESET / TCP_FLAGS drops count the same
way. Only probes count: a TCP segment with ACK or RST set (a SYN-ACK or RST
to a closed port) is backscatter of someone else's traffic or a reply to a
scan *we* sent, never a probe of ours.
"""

from __future__ import annotations

import ipaddress

from ..timefmt import parse_iso
from .scan import SlidingDistinct
from .evidence import threat_from
from .sinks import RecordsSink

SCAN_REASONS = frozenset({"NO_SOCKET", "TCP_RESET", "TCP_FLAGS", "TCP_INVALID_SYN"})
SCAN_WINDOW_S = 300.0
TCP_RST, TCP_ACK = 0x04, 0x10
HIGH_PORTS = 20      # distinct closed ports on one host from one source in the window
CRITICAL_PORTS = 200


def _loopback(addr: str) -> bool:
    try:
        return ipaddress.ip_address(addr).is_loopback
    except ValueError:
        return True   # not an address: ignore the row


class StackScanDetector:
    def __init__(self, window_s: float = SCAN_WINDOW_S, high: int = HIGH_PORTS,
                 critical: int = CRITICAL_PORTS):
        self.window_s, self.high, self.critical = window_s, high, critical
        self.ports = SlidingDistinct(max_groups=20000, max_events=4096)
        self._reported: dict[str, tuple[str, float]] = {}   # src -> (level, at)

    def judge(self, ev: dict) -> list[dict]:
        """Verdicts (with their evidence) for one `drops` event."""
        try:
            t = parse_iso(ev.get("ts"))
        except (ValueError, AttributeError, TypeError):
            t = None
        if t is None:
            raise ValueError(f"drops event with an unreadable ts {str(ev.get('ts'))[:40]!r}")
        found: dict[str, dict] = {}
        for f in ev.get("flows") or ():
            if not isinstance(f, dict) or f.get("reason") not in SCAN_REASONS:
                continue
            src, dst, port = f.get("src"), f.get("dst"), f.get("dport")
            if not (isinstance(src, str) and isinstance(dst, str) and isinstance(port, int)
                    and not isinstance(port, bool)):
                continue   # a malformed row says nothing; the rest still counts
            if f.get("proto") == 6 and (not isinstance(f.get("tcp_flags"), int)
                                        or f["tcp_flags"] & (TCP_ACK | TCP_RST)):
                continue   # backscatter or a reply, not a probe
            if src == dst or _loopback(src):
                continue   # the host probing itself: outbound, judged from connection events
            w = self.ports.observe((src,), t, dst, port, self.window_s)
            if w.distinct >= self.high and w.distinct > found.get(src, {}).get("ports", 0):
                found[src] = {"src": src, "dst": dst, "ports": w.distinct, "sample": w.sample,
                              "reason_seen": f["reason"]}
        out = []
        for src, e in found.items():
            level = "CRITICAL" if e["ports"] >= self.critical else "HIGH"
            last = self._reported.get(src)
            if last and (last[0] == level or level == "HIGH") and t - last[1] < self.window_s:
                continue   # already reported in this window at this level
            self._reported[src] = (level, t)
            if len(self._reported) > 20000:
                self._reported.pop(next(iter(self._reported)))
            out.append(self._verdict(ev, e, level))
        return out

    def _verdict(self, ev: dict, e: dict, level: str) -> dict:
        mins = self.window_s / 60
        return {
            "level": level, "category": "port_scan",
            "confidence": round(min(1.0, e["ports"] / self.critical), 3),
            "reason": (f"{e['src']} reached {e['ports']} closed ports on {e['dst']} within "
                       f"{mins:g} min (kernel drops {e['reason_seen']}; ports {e['sample'][:8]})"),
            "verdict_source": "rules", "rule_ids": ["stack:inbound_scan"],
            "recommended_action": "ban the source", "detector": "stack_drops",
            "evidence": {"src": e["src"], "dst": e["dst"], "distinct_ports": e["ports"],
                         "ports_sample": e["sample"], "window_s": self.window_s, "drops_ts": ev.get("ts")},
        }


def record_stack_scans(detector: StackScanDetector, ev: dict, sink: RecordsSink, tally, warn) -> int:
    """Feed one `drops` event; each scan found becomes a log entry and a
    threat (one per source). Returns how many. An unusable event is
    skipped with a one-line warning."""
    try:
        verdicts = detector.judge(ev)
    except ValueError as e:
        warn(f"{e}; skipped")
        return 0
    for v in verdicts:
        evidence = v["evidence"]
        event = {"type": "drops", "ts": ev.get("ts"), "src": evidence["src"], "daddr": evidence["dst"],
                 "dports": evidence["ports_sample"]}
        entry = RecordsSink.make_entry(event, v, "rules", False)
        sink.add(entry, threat_from(entry, evidence["src"], f"stackscan|{evidence['src']}", kind="scan"))
        tally(v["level"], "rules")
    return len(verdicts)
