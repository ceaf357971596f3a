"""Inbound rates from what the XDP program reports → `flow` and
`flow_aggregate` events.

The XDP program checks the thresholds itself (kernel/xdpstats.py) and sends
through a ring buffer only what crosses one, once per window: a source over
`--flow-watch-pps` packets in a second, or a destination port and protocol
over its aggregate threshold (SYNs, UDP, ICMP from every source together,
which is what a spoofed `--rand-source` flood cannot spread thin). So the
loader's work per interval is O(sources over the threshold), never O(the
65,536-entry statistics map): after a spoofed flood it is as cheap as
before it (issue 13).

A reported source is watched: every interval its statistics are looked up
(one map lookup) and the window's difference is a `flow` event, as before
(packets, bytes, protocol mix, SYNs without ACK, ICMP echo requests, SSDP and
reflection-port UDP, mean size, distinct-port estimate); it stops being
watched when a window passes below the threshold without a new report. An
aggregate record becomes a `flow_aggregate` event at once; the kernel's
per-protocol totals (a per-CPU array, O(CPUs) to read) give one with no port
for SYNs or UDP spread over many ports.
"""

from __future__ import annotations

import time
from typing import Callable

from ..abi import FLOW_COUNTERS as COUNTERS, WINDOW_NS
from ..kernel.enforcer import ktime_to_epoch
from ..timefmt import utc_now_iso

WATCH_MAX = 4096   # sources watched at once; more reports than this are counted, not watched
# A watched source is let go once it has not been reported for longer than
# this (the kernel reports it again in every window it crosses the threshold).
QUIET_S = 2.0 * WINDOW_NS / 1e9
NEW_SOURCE_S = 2.0   # a source first seen this recently is read from its first packet
# A rate is not read from a shorter window than this: a source reported a
# millisecond before the sample would otherwise show one packet as 1000/s.
# Its packets stay in the window and are reported at the next sample.
MIN_WINDOW_S = 0.25
AGG_PROTO = {"syn": "tcp", "udp": "udp", "icmp": "icmp"}
# Aggregate thresholds (packets/s to one port and protocol, all sources
# together) at which the XDP program reports; the analyzer decides what is a
# flood. Below the analyzer's CRITICAL flood rates (analyzer/floods.py).
AGG_PPS_DEFAULT = {"syn": 500, "udp": 2000, "icmp": 500}


class FlowTracker:
    def __init__(self, stats, *, top_n: int = 5, pps_threshold: float = 1000.0,
                 watch_pps: float = 100.0, clock: Callable[[], float] = time.monotonic,
                 tcp_state: Callable[[], dict] | None = None, agg_pps: dict | None = None):
        """stats: advance_flow_epoch() and flow_stats(key, epoch) (the Enforcer)."""
        self.stats = stats
        self.top_n = top_n
        self.pps_threshold = pps_threshold
        self.watch_pps = watch_pps
        self.clock = clock
        self.tcp_state = tcp_state or syncookie_state
        # key -> {"src", "family", "t": window start, "st": baseline, "reported": last report}
        self._watch: dict[tuple, dict] = {}
        self.unwatched = 0                    # reports beyond WATCH_MAX
        self.agg_pps = dict(agg_pps or {})
        self._totals: tuple[float, dict] | None = None   # (when, the kernel's totals)
        self._crossed: set[str] = set()       # kinds a single port crossed since the last spread()

    # ---- ring-buffer records (kernel/xdpstats.decode_event)
    def on_event(self, ev: dict) -> dict | None:
        """A source report starts (or renews) a watch; an aggregate record is
        returned as a flow_aggregate event body."""
        if ev["type"] == "source":
            now = self.clock()
            w = self._watch.get(ev["key"])
            if w is not None:
                w["reported"] = now
                return None
            if len(self._watch) >= WATCH_MAX:
                self.unwatched += 1
                return None
            st = self.stats.flow_stats(ev["key"], -1) or {c: 0 for c in COUNTERS}
            first = st.get("first_seen_ns", 0) / 1e9   # CLOCK_MONOTONIC, as self.clock
            if first and 0 <= now - first < NEW_SOURCE_S:
                # A new source: its whole life so far is the first window.
                t, st = first, {c: 0 for c in COUNTERS}
            else:
                t = now   # known before: the first window runs from the report
            self._watch[ev["key"]] = {"src": ev["src"], "family": ev["family"], "t": t,
                                      "st": st, "reported": now}
            return None
        self._crossed.add(ev["kind"])
        return self.aggregate(ev)

    def spread(self, totals: dict[str, int]) -> list[dict]:
        """flow_aggregate bodies (dport null) for SYNs and UDP over their
        threshold in all, from the kernel's per-CPU totals (O(CPUs)), in a
        window where no single port crossed it: a flood spread over ports
        (`-p ++1`, random ports) that the per-port counts never see whole."""
        now = self.clock()
        prev, self._totals = self._totals, (now, totals)
        crossed, self._crossed = self._crossed, set()
        if prev is None:
            return []
        window = max(now - prev[0], 1e-3)
        out = []
        for kind, counter in (("syn", "tcp_syn"), ("udp", "udp")):
            n = totals.get(counter, 0) - prev[1].get(counter, 0)
            limit = self.agg_pps.get(kind, 0)
            if not limit or kind in crossed or n / window < limit:
                continue
            body = {"kind": kind, "proto": AGG_PROTO[kind], "dport": None, "phase": "window",
                    "packets": n, "window_s": round(window, 3), "elapsed_s": round(window, 3),
                    "pps": round(n / window, 1)}
            if kind == "syn":
                body["syncookies"] = self.tcp_state()
            out.append(body)
        return out

    def aggregate(self, ev: dict) -> dict:
        """flow_aggregate body. A crossing says `count` packets arrived within
        the current one-second window, so its pps is a lower bound; a window
        record carries the whole window's count and length."""
        elapsed = ev["elapsed_ns"] / 1e9
        window = WINDOW_NS / 1e9 if ev["type"] == "crossed" else max(elapsed, 1e-3)
        body = {"kind": ev["kind"], "proto": AGG_PROTO.get(ev["kind"], ev["kind"]),
                "dport": ev["dport"] if ev["kind"] != "icmp" else None,
                "phase": ev["type"], "packets": ev["count"], "window_s": round(window, 3),
                "elapsed_s": round(elapsed, 3), "pps": round(ev["count"] / window, 1)}
        if ev["kind"] == "syn":
            body["syncookies"] = self.tcp_state()
        return body

    # ---- the per-interval sample
    def sample(self) -> list[dict]:
        """Flow event bodies for the watched sources (without v/type/ts)."""
        now = self.clock()
        epoch = self.stats.advance_flow_epoch()
        rows = []
        for key, w in list(self._watch.items()):
            st = self.stats.flow_stats(key, epoch)
            window = now - w["t"]
            old = w["st"]
            if st is None:
                del self._watch[key]   # evicted from the LRU
                continue
            if window < MIN_WINDOW_S:
                continue
            if st["packets"] < old.get("packets", 0):
                old = {}  # evicted and seen again: counts restarted
            delta = {c: st.get(c, 0) - old.get(c, 0) for c in COUNTERS}
            w["t"], w["st"] = now, st
            if now - w["reported"] > QUIET_S and delta["packets"] / window < self.watch_pps:
                del self._watch[key]   # quiet again; the kernel reports it if it comes back
            if delta["packets"] > 0:
                rows.append((w, st, delta, window))
        rows.sort(key=lambda r: r[2]["packets"], reverse=True)
        events = []
        for rank, (w, st, d, window) in enumerate(rows, 1):
            pps = d["packets"] / window
            over = pps >= self.pps_threshold
            if rank > self.top_n and not over:
                continue
            first, last = ktime_to_epoch(st.get("first_seen_ns", 0)), ktime_to_epoch(st.get("last_seen_ns", 0))
            events.append({
                "src": w["src"], "family": w["family"], "window_s": round(window, 3),
                "pps": round(pps, 1), "bps": round(d["bytes"] * 8 / window, 1),
                **{c: d[c] for c in COUNTERS},
                "pkt_size_mean": round(d["bytes"] / d["packets"], 1),
                "dport_buckets": bin(st.get("dport_bits", 0)).count("1"),
                "first_seen": utc_now_iso(first) if first else None,
                "last_seen": utc_now_iso(last) if last else None,
                "rank": rank, "reason": "threshold" if over else "top",
            })
        return events

    def watched(self) -> int:
        return len(self._watch)


class FlowFeed:
    """The loop's side: the ring buffer drained at every pass (aggregates go
    out at once), the watched sources sampled every `interval` seconds."""

    def __init__(self, enforcer, emit: Callable[..., None], *, interval: float, top_n: int,
                 pps_threshold: float, watch_pps: float, agg_pps: dict[str, float]):
        self.emit = emit
        self.interval = interval
        watch_pps = min(watch_pps, pps_threshold)   # every source over the threshold is reported
        self.tracker = FlowTracker(enforcer, top_n=top_n, pps_threshold=pps_threshold,
                                   watch_pps=watch_pps, agg_pps=agg_pps)
        # A window is one second, so packets/s are packets per window; 0 keeps
        # the kernel from reporting every source's first packet.
        enforcer.set_thresholds({"SRC_PPS": max(1, int(watch_pps)),
                                 **{f"AGG_{k.upper()}_PPS": int(v) for k, v in agg_pps.items()}})
        self.enforcer = enforcer
        enforcer.open_xdp_events(self._on_event)
        # The buffer is pinned: what the kernel wrote while no loader ran is
        # old news (a flood that may be long over), so it is read and dropped.
        self._stale = True
        enforcer.poll_xdp_events()
        self._stale = False
        self._next = 0.0

    def counts(self) -> dict:
        return {"watched_sources": self.tracker.watched(), "unwatched_reports": self.tracker.unwatched}

    def _on_event(self, ev: dict) -> None:
        if self._stale:
            return
        body = self.tracker.on_event(ev)
        if body is not None:
            self.emit("flow_aggregate", **body)

    def poll(self, now: float) -> None:
        self.enforcer.poll_xdp_events()
        if now >= self._next:
            for body in self.tracker.sample():
                self.emit("flow", **body)
            for body in self.tracker.spread(self.enforcer.totals()):
                self.emit("flow_aggregate", **body)
            self._next = now + self.interval


def syncookie_state(proc: str = "/proc") -> dict:
    """SYN cookies as this network namespace has them: the sysctl (0 off, 1
    when the backlog overflows, 2 always) and the kernel's cumulative
    counters (SyncookiesSent/Recv/Failed from netstat, PassiveOpens: completed
    inbound handshakes, from snmp). A value that cannot be read is None."""
    out: dict = {"tcp_syncookies": None, "sent": None, "recv": None, "failed": None,
                 "passive_opens": None}
    try:
        with open(f"{proc}/sys/net/ipv4/tcp_syncookies") as f:
            out["tcp_syncookies"] = int(f.read().strip())
    except (OSError, ValueError):
        pass
    for path, prefix, names in ((f"{proc}/net/netstat", "TcpExt:", {"SyncookiesSent": "sent",
                                 "SyncookiesRecv": "recv", "SyncookiesFailed": "failed"}),
                                (f"{proc}/net/snmp", "Tcp:", {"PassiveOpens": "passive_opens"})):
        try:
            with open(path) as f:
                lines = [ln.split() for ln in f if ln.startswith(prefix)]
        except OSError:
            continue
        for head, values in zip(lines[::2], lines[1::2]):
            for name, value in zip(head[1:], values[1:]):
                if name in names:
                    try:
                        out[names[name]] = int(value)
                    except ValueError:
                        pass
    return out
