"""Drop reasons for the loader (issue 17, slice 1): every interval, drain
the kernel's drop counters (kernel/stack.py) into one `drops` event.

Nothing per packet reaches user space: the kernel aggregates, this reads a
bounded map on an interval. XDP drops by our enforcer are counted beside the
kernel's reasons, once: where XDP runs on an skb (generic mode, veth) the
kernel frees that skb too, and kfree_skb reports it (reason XDP in generic
mode; NOT_SPECIFIED at veth_xdp_rcv_skb on veth). Such sites are marked
`xdp` and our counter only adds the drops they did not already show.
"""

from __future__ import annotations

import socket
from typing import Callable

from ..kernel import KernelError
from ..kernel.stack import StackProbe, own_netns

TOP_SITES = 20
TOP_FLOWS = 50
# Functions where an XDP verdict frees an skb (seen on 6.x kernels).
XDP_SKB_FUNCS = frozenset({"veth_xdp_rcv_skb", "do_xdp_generic", "netif_receive_generic_xdp",
                           "bpf_prog_run_generic_xdp"})


def is_xdp_site(reason: str, location: str) -> bool:
    return reason == "XDP" or location.split("+", 1)[0] in XDP_SKB_FUNCS


def _ifname(ifindex: int | None, netns: int | None, mine: int | None) -> str | None:
    """Interface name, only when the device is in the loader's own network
    namespace (an ifindex means nothing in another one)."""
    if not ifindex or netns is None or netns != mine:
        return None
    try:
        return socket.if_indextoname(ifindex)
    except OSError:
        return None   # the device went away since the drop


def _merge(rows: list[dict], keys: tuple[str, ...]) -> list[dict]:
    """Sum counts of rows equal on `keys` (the kernel key also holds fields
    the event does not show), biggest first."""
    out: dict[tuple, dict] = {}
    for r in rows:
        k = tuple(r.get(x) for x in keys)
        if k in out:
            out[k]["count"] += r["count"]
        else:
            out[k] = {x: r.get(x) for x in keys} | {"count": r["count"]}
    return sorted(out.values(), key=lambda r: -r["count"])


class DropReporter:
    def __init__(self, emit: Callable[..., None], warn: Callable[[str], None],
                 xdp_drops: Callable[[], int] | None = None, xdp_mode: str | None = None,
                 xdp_ifname: str | None = None):
        self.emit = emit
        self.warn = warn
        self.xdp_drops = xdp_drops
        self.xdp_mode = xdp_mode
        self.xdp_ifname = xdp_ifname
        self._xdp_credit = 0   # skb frees seen at our XDP sites before our counter moved
        self.probe = StackProbe()
        self.netns = own_netns()
        self._xdp_last = 0
        self._misses_last: dict[str, int] = {}
        self.totals = {"drops": 0, "intervals": 0}
        self.off_reason: str | None = None

    def start(self) -> bool:
        """Attach; on a kernel without the tracepoint, say so and stay off
        (visibility is not enforcement: the loader goes on)."""
        try:
            self.probe.start()
        except KernelError as e:
            self.off_reason = str(e)
            self.probe.stop()
            return False
        except Exception as e:  # BCC compile/attach errors are plain Exceptions
            self.off_reason = f"stack probe failed to load: {str(e).splitlines()[0]}"
            self.probe.stop()
            return False
        if self.xdp_drops:
            self._xdp_last = self.xdp_drops()
        return True

    def sample(self, interval_s: float, keep_empty: bool = False) -> dict | None:
        """One `drops` body for the interval just ended, or None if nothing
        dropped (and not keep_empty: full-queue rows to carry, whose drops
        the previous interval's sites already counted)."""
        sites = self.probe.read_sites()
        flows = self.probe.read_flows()
        misses = self.probe.read_misses()
        xdp_ours = 0
        if self.xdp_drops:
            now = self.xdp_drops()
            xdp_ours, self._xdp_last = max(0, now - self._xdp_last), now
        new_misses = {k: v - self._misses_last.get(k, 0) for k, v in misses.items()}
        self._misses_last = misses
        reasons: dict[str, int] = {}
        for s in sites:
            reasons[s["reason"]] = reasons.get(s["reason"], 0) + s["count"]
            s["ifname"] = _ifname(s["ifindex"], s["netns"], self.netns)
            s["xdp"] = is_xdp_site(s["reason"], s["location"])
        seen_as_skb = sum(s["count"] for s in sites if s["xdp"] and s["ifname"] == self.xdp_ifname)
        # The kernel map and our counter are read a moment apart, so a drop
        # can land in one this interval and in the other the next: carry
        # the surplus over (one interval at most) instead of counting twice.
        balance = self._xdp_credit + seen_as_skb - xdp_ours
        extra = max(0, -balance)
        self._xdp_credit = min(max(0, balance), seen_as_skb)
        total = sum(reasons.values()) + extra
        if total == 0 and not any(new_misses.values()) and not keep_empty:
            return None
        self.totals["drops"] += total
        self.totals["intervals"] += total > 0
        site_rows = _merge(sites, ("reason", "location", "ifname", "ifindex", "netns", "xdp"))
        flow_rows = _merge(flows, ("reason", "family", "proto", "src", "dst", "dport", "tcp_flags", "netns"))
        # This namespace's first (the sort keeps the biggest first within
        # each): another namespace's flood of many sources must not push
        # this host's own flows out of the event.
        site_rows.sort(key=lambda r: r["netns"] != self.netns)
        flow_rows.sort(key=lambda r: r["netns"] != self.netns)
        return {
            "interval_s": round(interval_s, 3), "total": total, "reasons": reasons,
            "sites": site_rows[:TOP_SITES], "flows": flow_rows[:TOP_FLOWS],
            "flows_more": max(0, len(flow_rows) - TOP_FLOWS),
            "xdp": {"ours": xdp_ours, "seen_as_skb": seen_as_skb, "added": extra, "mode": self.xdp_mode},
            "missed": new_misses, "detail_off_reason": self.probe.detail_off_reason,
        }

    def stop(self) -> None:
        self.probe.stop()
