"""What the XDP program reports about inbound traffic, read at a cost that
does not grow with the number of sources seen (issue 13): the thresholds it
checks (`xdp_config`), the `xdp_events` ring buffer through which it sends a
source or an aggregate (per destination port and protocol) once per window
when it crosses one, and single-source lookups in the per-CPU `flows` map
for the sources it named. Nothing here walks `flows` or `agg`. A mixin of
Enforcer (kernel/enforcer.py), beside maps.EnforcerMaps."""

from __future__ import annotations

import ctypes
import ipaddress
from typing import Callable

from ..abi import AGG_KINDS, CFG, FAMILY_V4, XEV


class XdpEvent(ctypes.Structure):
    """struct ns_xdp_event (bpf/netsentinel.h; tests/test_abi.py compares the fields)."""
    _fields_ = [("type", ctypes.c_uint8), ("family", ctypes.c_uint8), ("kind", ctypes.c_uint8),
                ("_pad", ctypes.c_uint8), ("dport", ctypes.c_uint16), ("_pad2", ctypes.c_uint16),
                ("count", ctypes.c_uint64), ("elapsed_ns", ctypes.c_uint64),
                ("addr", ctypes.c_uint8 * 16)]


XEV_NAMES = {XEV["SOURCE"]: "source", XEV["AGG"]: "crossed", XEV["AGG_WINDOW"]: "window"}


def decode_event(raw: XdpEvent) -> dict | None:
    """One ring-buffer record as a dict; None for a type this version does not know."""
    kind = XEV_NAMES.get(raw.type)
    if kind is None:
        return None
    if kind == "source":
        b = bytes(raw.addr)
        v4 = raw.family == FAMILY_V4
        return {"type": kind, "src": str(ipaddress.ip_address(b[:4] if v4 else b)),
                "family": "ipv4" if v4 else "ipv6", "key": (raw.family, b),
                "count": int(raw.count), "elapsed_ns": int(raw.elapsed_ns)}
    return {"type": kind, "kind": AGG_KINDS.get(raw.kind, str(raw.kind)), "dport": int(raw.dport),
            "count": int(raw.count), "elapsed_ns": int(raw.elapsed_ns)}


class XdpStats:
    bpf = None
    _xev_open = False

    def set_thresholds(self, values: dict[str, int]) -> None:
        """Write the thresholds the XDP program checks: {"SRC_PPS": n, "AGG_SYN_PPS": n, ...}
        (the NS_CFG_ suffixes); 0 turns a check off."""
        t = self.bpf["xdp_config"]
        for name, value in values.items():
            t[t.Key(CFG[name])] = ctypes.c_ulonglong(int(value))

    def open_xdp_events(self, on_event: Callable[[dict], None]) -> None:
        """Decoded ring-buffer records go to on_event when poll_xdp_events() runs."""
        def cb(_ctx, data, _size):
            ev = decode_event(ctypes.cast(data, ctypes.POINTER(XdpEvent)).contents)
            if ev is not None:
                on_event(ev)
            return 0
        self._xev_cb = cb   # BCC keeps only a weak reference to the callback
        self.bpf["xdp_events"].open_ring_buffer(cb)
        self._xev_open = True

    def poll_xdp_events(self) -> None:
        """Everything the ring buffer holds now, without waiting."""
        if self._xev_open:
            self.bpf.ring_buffer_consume()

    def advance_flow_epoch(self) -> int:
        """Close the destination-port window: the kernel fills the next one;
        returns the epoch of the one just closed (read with flow_stats)."""
        epoch = self.bpf["flow_epoch"]
        e = int(epoch[epoch.Key(0)].value)
        epoch[epoch.Key(0)] = ctypes.c_ulonglong(e + 1)
        return e

    def flow_stats(self, key: tuple[int, bytes], epoch: int) -> dict | None:
        """One source's statistics summed over CPUs (None once the LRU has
        evicted it); `dport_bits` is the OR of the ports of window `epoch`."""
        t = self.bpf["flows"]
        k = t.Key()
        k.family = key[0]
        ctypes.memmove(k.addr, key[1], 16)
        try:
            per_cpu = t[k]
        except KeyError:
            return None
        slot = epoch & 1
        agg: dict = {"dport_bits": 0, "first_seen_ns": 0, "last_seen_ns": 0}
        for v in per_cpu:
            if v.dport_epoch[slot] == epoch:
                agg["dport_bits"] |= v.dport_bits[slot]
            for name, _ in v._fields_:
                if name.startswith("dport_") or name == "win":
                    continue
                x = getattr(v, name)
                if name == "first_seen_ns":
                    if x and (not agg[name] or x < agg[name]):
                        agg[name] = x
                elif name == "last_seen_ns":
                    agg[name] = max(agg[name], x)
                else:
                    agg[name] = agg.get(name, 0) + x
        return agg
