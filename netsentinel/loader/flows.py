"""Per-source inbound traffic rates from the XDP statistics map → `flow` events.

Every interval the loader reads the per-CPU LRU map, subtracts the previous
sample and reports, per source, what arrived in the window: packets, bytes,
protocol mix, SYNs without ACK, ICMP echo requests, SSDP and reflection-port
UDP, the mean packet size and an estimate of distinct destination ports.
It emits the top talkers and every source over the packet-rate threshold;
flood detection and classification happen in the analyzer.
"""

from __future__ import annotations

import time
from typing import Callable

from ..abi import FLOW_COUNTERS as COUNTERS
from ..kernel.enforcer import ktime_to_epoch
from ..timefmt import utc_now_iso


class FlowTracker:
    def __init__(self, read_flows: Callable[[], dict], *, top_n: int = 5, pps_threshold: float = 1000.0,
                 clock: Callable[[], float] = time.monotonic):
        self.read_flows = read_flows
        self.top_n = top_n
        self.pps_threshold = pps_threshold
        self.clock = clock
        self._prev: dict[str, dict] = {}
        self._prev_t: float | None = None

    def sample(self) -> list[dict]:
        """Flow event bodies for this window (without v/type/ts)."""
        now = self.clock()
        cur = self.read_flows()
        window = None if self._prev_t is None else max(now - self._prev_t, 1e-3)
        prev, self._prev, self._prev_t = self._prev, cur, now
        if window is None:
            return []  # the first sample only sets the baseline
        rows = []
        for src, st in cur.items():
            old = prev.get(src)
            if old is not None and st["packets"] < old["packets"]:
                old = None  # evicted from the LRU and seen again: counts restarted
            delta = {c: st[c] - (old[c] if old else 0) for c in COUNTERS}
            if delta["packets"] <= 0:
                continue
            rows.append((src, st, delta))
        rows.sort(key=lambda r: r[2]["packets"], reverse=True)
        events = []
        for rank, (src, st, d) in enumerate(rows, 1):
            pps = d["packets"] / window
            over = pps >= self.pps_threshold
            if rank > self.top_n and not over:
                continue
            first, last = ktime_to_epoch(st.get("first_seen_ns", 0)), ktime_to_epoch(st.get("last_seen_ns", 0))
            events.append({
                "src": src, "family": st["family"], "window_s": round(window, 3),
                "pps": round(pps, 1), "bps": round(d["bytes"] * 8 / window, 1),
                **{c: d[c] for c in COUNTERS},
                "pkt_size_mean": round(d["bytes"] / d["packets"], 1),
                "dport_buckets": bin(st.get("dport_bits", 0)).count("1"),
                "first_seen": utc_now_iso(first) if first else None,
                "last_seen": utc_now_iso(last) if last else None,
                "rank": rank, "reason": "threshold" if over else "top",
            })
        return events
