"""Outbound UDP per process, loader side: `udp` events.

The kernel (bpf/outbound.bpf.c, cgroup sendmsg/connect hooks and the TCX
egress counter) reports the first datagram of each process x destination x
port once, and counts every datagram in a map the loader empties on an
interval. The first sighting is when /proc is read for the process's
identity (a one-shot sender is often gone by the end of the window); every
window then gives one `udp` event per sending process: its identity, totals,
its fan-out (hosts, ports on its busiest host) and its busiest flows.
"""

from __future__ import annotations

from collections import OrderedDict

from .procinfo import read_start

MAX_IDENTITIES = 4096
MAX_FLOWS = 256          # flows listed per event (the busiest); totals are exact


class UdpTracker:
    def __init__(self, counts: dict):
        # pid -> (identity, the process's start time in clock ticks when it
        # was read; None: unknown). The start time, not the name, tells a
        # reused pid: an event's comm is its thread's (Chromium's sockets
        # are in threads named otherwise), /proc's is the process's.
        self.idents: OrderedDict[int, tuple[dict, int | None]] = OrderedDict()
        self.fresh: dict[int, int] = {}    # pid -> flows first seen this window
        self.counts = counts   # the loader's outbound counters (status file)
        counts.update(udp_flows=0, udp_events=0)

    def first(self, pid: int, ident: dict) -> None:
        """A flow's first datagram, with the sender's identity read for it
        (ProcCache: a reading of the same process instance, or a new one)."""
        self.counts["udp_flows"] += 1
        self.fresh[pid] = self.fresh.get(pid, 0) + 1
        held = self.idents.get(pid)
        if held is None or held[0] != ident:
            start = read_start(pid) if ident.get("proc_error") is None else None
            held = (ident, start)
        self.idents[pid] = held
        self.idents.move_to_end(pid)
        while len(self.idents) > MAX_IDENTITIES:
            self.idents.popitem(last=False)

    def forget_reused(self, pids) -> None:
        """Forget the identity of each pid now held by another process than
        the one read (a reused pid sending to a flow the old process had:
        no new first-datagram event); a gone one keeps its identity."""
        for pid in pids:
            held = self.idents.get(pid)
            if held is not None and held[1] is not None:
                now = read_start(pid)
                if now is not None and now != held[1]:
                    del self.idents[pid]

    def window(self, rows, window_s: float, lookup) -> list[dict]:
        """One `udp` event body per sending process for this window's rows.
        lookup(pid): the identity of a sender never announced (a lost event)."""
        by_pid: dict[int, list] = {}
        for r in rows:
            by_pid.setdefault(r.pid, []).append(r)
        out = []
        for pid, flows in by_pid.items():
            held = self.idents.get(pid)
            ident = held[0] if held is not None else lookup(pid)
            ports: dict[str, set] = {}
            for r in flows:
                ports.setdefault(r.daddr, set()).add(r.dport)
            busiest = max(ports, key=lambda a: len(ports[a]))
            flows.sort(key=lambda r: -(max(r.datagrams, r.connects)))
            out.append({
                **ident, "window_s": round(window_s, 3),
                # A resolver lookup is a connect() and one send: count it once.
                "datagrams": sum(max(r.datagrams, r.connects) for r in flows),
                "connects": sum(r.connects for r in flows),
                "flow_count": len(flows), "new_flows": self.fresh.pop(pid, 0),
                "hosts": len(ports), "busiest_host": busiest, "busiest_host_ports": len(ports[busiest]),
                "flows": [{"daddr": r.daddr, "family": r.family, "dport": r.dport,
                           "datagrams": max(r.datagrams, r.connects)} for r in flows[:MAX_FLOWS]]})
        self.fresh.clear()
        self.counts["udp_events"] += len(out)
        return out
