"""Inbound flood detection from `flow` events: thresholds first, a trained
classifier second.

Thresholds are data (DEFAULT_THRESHOLDS, overridable per key in
llm_config.json's "flood_thresholds"): for each kind of flood, the rate of its
telltale packets in packets per second at which it is HIGH and CRITICAL, and
the share of the window those packets must make up. The defaults were set
against real tools in the lab (docs/flow_model.md, ml/data/flows.jsonl): the
telltale kinds (ICMP echo, SYN, SSDP, reflection-port UDP) are CRITICAL from
800 pps, which hping3 at `-i u1000` (~900-950 pps there) crosses; plain UDP
is HIGH from 1,500 and CRITICAL from 3,000 pps: hping3 `--udp --flood` on a
2-core host delivers 3,500-4,500 pps, which must be CRITICAL (issue 13).
Ping at 5/s, 40 TCP requests/s, iperf3 UDP at 4 Mbit/s (~350 pps) and
iperf3 bulk TCP (17,000 ACK-carrying segments/s) are not flagged; a UDP
stream from an address this host has an established TCP session with (an
iperf3 test, whose control connection it accepted) is a session, not a
flood (flowjudge.py).

A SYN flood against an open port: the attacker's own kernel answers each
SYN-ACK with a RST, so a window holds as many RSTs as SYNs. Those resets
(TCP with neither SYN nor ACK) are the flood's echo, not other traffic: the
SYN share is taken without them, and the SYNs counted are those that
completed no handshake (the source's accepts, inbound.py, subtracted).

The classifier (netsentinel/analyzer/flowmodel.py) labels every window; it can raise a
sub-threshold window to MEDIUM for a person to look at, and it names the
kind when thresholds disagree, but it never creates a CRITICAL on its own:
auto-blocking rests on the documented thresholds alone.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..levels import rank as level_rank
from ..llm.config import DEFAULT_THRESHOLDS, merge_thresholds  # noqa: F401 (re-exported)
from .flowmodel import FlowModel

# When several kinds fire, the most specific one names the flood (an SSDP
# flood is also a UDP flood).
SPECIFICITY = {"udp_flood": 0}
# A SYN "flood" touching many ports is a scan; it is reported as such.
SCAN_MIN_BUCKETS = 24


@dataclass
class FloodVerdict:
    level: str               # HIGH or CRITICAL (MEDIUM: classifier only)
    category: str           # icmp_flood, syn_flood, ..., port_scan
    rate: float             # telltale packets per second
    confidence: float
    reason: str
    source: str             # "thresholds" or "classifier"
    model_label: str | None = None
    model_confidence: float | None = None


def half_open(ev: dict, accepted: float) -> tuple[int, int]:
    """(SYNs that completed no handshake, the packets they are a share of):
    bare TCP segments (no SYN, no ACK: the RSTs answering our SYN-ACKs, or
    FIN/NULL probes) leave the denominator."""
    syn = int(ev.get("tcp_syn", 0))
    bare = max(0, int(ev.get("tcp", 0)) - syn - int(ev.get("tcp_ack", 0)))
    return max(0, syn - int(accepted)), max(1, int(ev.get("packets", 0)) - bare)


class FloodDetector:
    def __init__(self, thresholds: dict | None = None, model: FlowModel | None = None):
        self.thresholds = merge_thresholds(thresholds)
        self.model = model

    def judge(self, ev: dict, accept_rate: float = 0.0) -> FloodVerdict | None:
        """A verdict for one flow event, or None when it looks normal.
        accept_rate: handshakes per second the source completed lately."""
        window = max(float(ev.get("window_s") or 1.0), 1e-3)
        packets = max(int(ev.get("packets", 0)), 1)
        label = conf = None
        if self.model is not None:
            label, conf = self.model.predict(ev)
        best: FloodVerdict | None = None
        best_rank: tuple = ()
        for kind, t in self.thresholds.items():
            count, base = int(ev.get(t["counter"], 0)), packets
            if kind == "syn_flood":
                count, base = half_open(ev, accept_rate * window)
            rate = count / window
            share = count / base
            if rate < t["high"] or share < t["min_share"]:
                continue
            level = "CRITICAL" if rate >= t["critical"] else "HIGH"
            category = kind
            if kind == "syn_flood" and int(ev.get("dport_buckets", 0)) >= SCAN_MIN_BUCKETS:
                category = "port_scan"
            v = FloodVerdict(level, category, round(rate, 1), round(min(1.0, rate / t["critical"]), 3),
                             f"{rate:.0f} {t['counter']} packets/s from {ev.get('src')} "
                             f"({share:.0%} of its traffic; {level} at {t['high'] if level == 'HIGH' else t['critical']}/s)",
                             "thresholds", label, conf)
            rank = (level_rank(v.level), SPECIFICITY.get(kind, 1), v.rate)
            if best is None or rank > best_rank:
                best, best_rank = v, rank
        if best is not None:
            return best
        if label and label != "normal" and conf is not None and conf >= 0.8:
            return FloodVerdict("MEDIUM", label, round(int(ev.get("packets", 0)) / window, 1), conf,
                                f"the flow classifier says {label} ({conf:.0%}) below the flood thresholds",
                                "classifier", label, conf)
        return None


# Aggregate floods (flow_aggregate events: one destination port and
# protocol, every source together, counted in the XDP program). Higher than
# the per-source rates, as a busy service sees many clients at once: for
# each kind, the packets/s at which it is HIGH (logged) and CRITICAL (rate
# limited), and the cap the rate-limit rule puts on it. hping3 `--flood
# --rand-source` sends far more than CRITICAL in the lab (docs/flow_model.md).
AGG_THRESHOLDS = {
    "syn": {"high": 2000, "critical": 5000, "cap": 1000},
    "udp": {"high": 20000, "critical": 50000, "cap": 10000},
    # ICMP: above what the per-source path bans (800/s from one address), so
    # one pinging flood is banned, not every client's ping limited.
    "icmp": {"high": 3000, "critical": 6000, "cap": 1000},
}
# A SYN rate whose handshakes mostly complete is load, not a flood.
HANDSHAKE_SHARE_OK = 0.5


@dataclass
class AggregateVerdict:
    level: str              # HIGH or CRITICAL
    category: str           # syn_flood, udp_flood, icmp_flood (aggregate)
    rate: float
    reason: str
    rule: dict | None       # the ratelimit rule to install (CRITICAL only)


class AggregateDetector:
    """Judges flow_aggregate events; remembers the SYN cookie counters of the
    last SYN window to tell completed handshakes from a flood."""

    def __init__(self, thresholds: dict | None = None):
        self.thresholds = thresholds or AGG_THRESHOLDS
        self._last_syn: tuple[float, int] | None = None   # (ts of the window, passive opens)

    def _handshake_share(self, ev: dict, now: float) -> float | None:
        opens = (ev.get("syncookies") or {}).get("passive_opens")
        if ev.get("kind") != "syn" or not isinstance(opens, int):
            return None
        last, self._last_syn = self._last_syn, (now, opens)
        if ev.get("phase") != "window" or last is None or now - last[0] > 5 or not ev.get("packets"):
            return None
        return max(0, opens - last[1]) / ev["packets"]

    def judge(self, ev: dict, now: float) -> AggregateVerdict | None:
        kind = ev.get("kind")
        t = self.thresholds.get(kind)
        if t is None:
            return None
        rate = float(ev.get("pps") or 0)
        share = self._handshake_share(ev, now)
        if rate < t["high"]:
            return None
        dport = ev.get("dport")
        where = (f"{ev.get('proto')} port {dport}" if dport is not None
                 else str(ev.get("proto")) + (" (all ports)" if kind != "icmp" else ""))
        level = "CRITICAL" if rate >= t["critical"] else "HIGH"
        reason = f"{rate:.0f} {kind} packets/s to {where} from all sources together"
        if dport is None and kind != "icmp":
            return AggregateVerdict(level, f"{kind}_flood", round(rate, 1),
                                    f"{reason}, spread over ports: not limited (a cap on every port "
                                    "would cap SSH too); add a ratelimit rule for the ports to protect",
                                    None)
        if share is not None and share >= HANDSHAKE_SHARE_OK:
            return AggregateVerdict("HIGH", f"{kind}_flood", rate,
                                    f"{reason}, but {share:.0%} of them completed a handshake: load, "
                                    "not limited", None)
        rule = None
        if level == "CRITICAL":
            rule = {"id": f"agg-{kind}-{dport if dport is not None else 'all'}", "action": "ratelimit",
                    "proto": ev.get("proto"), "rate_pps": t["cap"],
                    "reason": f"aggregate {kind} flood: {reason}; capped at {t['cap']}/s"}
            if dport is not None:
                rule["dport"] = dport
            reason += f" (CRITICAL at {t['critical']}/s): rate limit {t['cap']}/s, no address banned"
        else:
            reason += f" (HIGH at {t['high']}/s)"
        return AggregateVerdict(level, f"{kind}_flood", round(rate, 1), reason, rule)
