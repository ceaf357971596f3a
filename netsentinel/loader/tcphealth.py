"""TCP health per connection (issue 17, slice 2): each interval, one
`tcp_health` event per connection that was active since the last one, and a
final one (`final: true`) when it closes.

The kernel side (bpf/stack.bpf.c, NS_STACK_TCP) keeps srtt/cwnd from
tcp:tcp_probe, retransmits, resets and the last state changes per socket.
The process is the one that called connect() (known in SYN_SENT) or, for an
accepted (inbound) connection, the one whose accept() returned its socket
(syscalls:sys_exit_accept4/accept, the fd followed to the socket with BTF
offsets); `pid` is null until a process accepts it, or when that part is
off (`accept_off_reason` on the stream at start).
"""

from __future__ import annotations

import time
from typing import Callable

from ..timefmt import utc_now_iso

MAX_PER_INTERVAL = 200   # events per interval, the most telling first (sample())
MAX_PENDING_FINALS = 4096   # final reports carried over to the next intervals when one has no room


def _wall(ktime_ns: int, offset: float) -> str:
    """bpf_ktime_get_ns() is CLOCK_MONOTONIC: shift it onto the wall clock."""
    return utc_now_iso(ktime_ns / 1e9 + offset)


class TcpHealth:
    def __init__(self, read: Callable[[], list[dict]], proc_info: Callable[[int], dict],
                 netns: int | None = None, details: Callable[[dict], dict] = lambda r: r):
        """read: the connections, each with at least key, closed, netns,
        segments_in, retransmits, first_ns, last_ns; details: the rest of a
        row, added only to the ones reported (kernel/stack.py read_tcp_light)."""
        self.read = read
        self.details = details
        self.proc_info = proc_info
        self.netns = netns   # the loader's: its connections come first
        self._last: dict[int, int] = {}   # key -> last_ns already reported
        # A closed connection's entry is gone from the kernel once read: a
        # final report with no room this interval waits for the next ones
        # (another namespace's connection churn must not cost it).
        self._pending: dict[tuple, dict] = {}
        self.totals = {"tcp_reported": 0, "tcp_omitted": 0}

    def sample(self) -> list[dict]:
        offset = time.time() - time.monotonic()
        rows = self.read()
        live = {r["key"] for r in rows if not r["closed"]}
        due = list(self._pending.values()) + [
            r for r in rows if (r["closed"] and r["key"] not in self._pending)
            or (not r["closed"] and self._last.get(r["key"]) != r["last_ns"])]
        # Priority: this namespace's; connections that carried data (a
        # connect flood's sockets that never got a segment come last: the
        # connection events already tell of them); closed ones; those with
        # retransmits; then the longest-lived (a flood's connections live
        # for microseconds: they must not bury one that lasted seconds).
        due.sort(key=lambda r: (r.get("netns") != self.netns, r["segments_in"] == 0, not r["closed"],
                                r["retransmits"] == 0, r["first_ns"] - r["last_ns"], -r["retransmits"]))
        keep, later = due[:MAX_PER_INTERVAL], due[MAX_PER_INTERVAL:]
        self._pending = {r["key"]: r for r in later if r["closed"]}   # in priority order
        while len(self._pending) > MAX_PENDING_FINALS:
            self._pending.popitem()   # the lowest priority
            self.totals["tcp_omitted"] += 1
        self.totals["tcp_omitted"] += sum(1 for r in later if not r["closed"])
        out = []
        for r in keep:
            self._last[r["key"]] = r["last_ns"]
            out.append(self._body(self.details(r), offset))
        # Forget closed connections (their entries are gone from the kernel).
        self._last = {k: v for k, v in self._last.items() if k in live}
        self.totals["tcp_reported"] += len(out)
        return out

    def _body(self, r: dict, offset: float) -> dict:
        info = self.proc_info(r["pid"]) if r["pid"] else {}
        return {
            "final": r["closed"], "family": r["family"], "saddr": r["saddr"], "sport": r["sport"],
            "daddr": r["daddr"], "dport": r["dport"], "state": r["state"],
            "direction": "inbound" if r["inbound"] else "outbound",
            "pid": r["pid"], "uid": r["uid"], "comm": r["comm"],
            "exe": info.get("exe"), "cmdline": info.get("cmdline"),
            "srtt_ms": round(r["srtt_us"] / 1000, 3), "cwnd": r["cwnd"],
            # 0x7fffffff is the kernel's "no slow-start threshold yet"
            "ssthresh": r["ssthresh"] if r["ssthresh"] < 0x7FFFFFFF else None,
            "segments_in": r["segments_in"], "retransmits": r["retransmits"],
            "rst_sent": r["rst_sent"], "rst_recv": r["rst_recv"], "queue_drops": r.get("queue_drops", 0),
            "netns": r.get("netns"),
            "state_changes": r["state_changes"],
            "states": [{"state": s, "at": _wall(ns, offset)} for s, ns in r["states"]],
            "first_seen": _wall(r["first_ns"], offset), "last_seen": _wall(r["last_ns"], offset),
        }


MAX_ACCEPT_ROWS = 200    # (client, port) rows per `accepts` event; the biggest first
LOCAL_TTL_S = 5.0        # how long this namespace's own addresses are trusted


class Accepts:
    """`accepts` events: handshakes completed on this host's listeners in
    the interval, per client and port, counted in the kernel (bpf/stack.bpf.c,
    SYN_RECV -> ESTABLISHED). The tracepoint sees every network namespace;
    only connections to an address of the loader's own namespace are kept
    (other namespaces' are counted in `other_netns`)."""

    def __init__(self, read: Callable[[], list[dict]], local: Callable[[], set[str]],
                 clock: Callable[[], float] = time.monotonic):
        self.read, self.local, self.clock = read, local, clock
        self._local: set[str] = set()
        self._local_at = -LOCAL_TTL_S
        self.totals = {"accepts": 0, "accepts_other_netns": 0}

    def _ours(self) -> set[str]:
        now = self.clock()
        if now - self._local_at >= LOCAL_TTL_S:
            self._local, self._local_at = self.local(), now
        return self._local

    def sample(self, interval_s: float) -> dict | None:
        rows = self.read()
        if not rows:
            return None
        ours = self._ours()
        merged: dict[tuple, int] = {}
        other = 0
        for r in rows:
            if r["dst"] not in ours:
                other += r["count"]
                continue
            key = (r["src"], r["port"])
            merged[key] = merged.get(key, 0) + r["count"]
        self.totals["accepts_other_netns"] += other
        if not merged:
            return None
        total = sum(merged.values())
        self.totals["accepts"] += total
        top = sorted(merged.items(), key=lambda kv: -kv[1])
        return {"interval_s": round(interval_s, 3), "total": total,
                "sources": [{"src": s, "port": p, "count": n} for (s, p), n in top[:MAX_ACCEPT_ROWS]],
                "sources_more": max(0, len(top) - MAX_ACCEPT_ROWS), "other_netns": other}
