"""What raw and packet sockets send, loader side: `egress` events.

The kernel (ns_egress in bpf/outbound.bpf.c, TCX egress on the monitored
interface) counts packets of raw/packet sockets per socket cookie x
destination x protocol x port. Every window the loader empties that map and
emits one `egress` event per sending socket, naming the process that opened
it: when the loader reports a raw_socket it duplicates the new descriptor
out of the process (pidfd_getfd) and reads its SO_COOKIE, the same cookie
the egress program keys on. A socket whose opener was already gone (a
one-shot tool can be done before its event is read) is not attributed; the
event then lists as "candidates" the recent openers whose socket could not
be read, and names nobody.
"""

from __future__ import annotations

import ctypes
import os
import time
from collections import OrderedDict, deque

SYS_PIDFD_GETFD = 438   # x86_64 and aarch64 (asm-generic) alike
SOL_SOCKET, SO_COOKIE = 1, 57
MAX_OWNERS = 4096
RECENT_S = 10.0
MAX_TARGETS = 64        # destinations per event (the busiest)
MAX_PORTS = 256         # ports listed per destination (counts are exact)
IDENTITY = ("pid", "ppid", "uid", "comm", "exe", "cmdline")

_libc = None


def _lib():
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
        _libc.syscall.restype = ctypes.c_long
    return _libc


def socket_cookie(pid: int, fd: int) -> int | None:
    """SO_COOKIE of descriptor fd of process pid, or None (gone, not a socket,
    no pidfd_getfd on this kernel)."""
    try:
        pidfd = os.pidfd_open(pid)
    except OSError:
        return None
    try:
        dup = _lib().syscall(SYS_PIDFD_GETFD, pidfd, fd, 0)
        if dup < 0:
            return None
        try:
            value, size = ctypes.c_uint64(), ctypes.c_uint32(8)
            if _lib().getsockopt(dup, SOL_SOCKET, SO_COOKIE, ctypes.byref(value),
                                 ctypes.byref(size)) != 0:
                return None
            return int(value.value)
        finally:
            os.close(dup)
    finally:
        os.close(pidfd)


class EgressTracker:
    def __init__(self):
        self.owners: OrderedDict[int, dict] = OrderedDict()
        self.recent: deque = deque(maxlen=64)   # (monotonic, identity)

    def remember(self, fields: dict) -> None:
        """A raw_socket event's process, as the owner of that socket."""
        ident = {k: fields.get(k) for k in IDENTITY}
        cookie = socket_cookie(fields["pid"], fields["fd"])
        if cookie is None:
            self.recent.append((time.monotonic(), ident))
            return
        self.owners[cookie] = ident
        self.owners.move_to_end(cookie)
        while len(self.owners) > MAX_OWNERS:
            self.owners.popitem(last=False)

    def _owner(self, cookie: int) -> dict:
        ident = self.owners.get(cookie)
        if ident is not None:
            return {**ident, "attribution": "cookie"}
        horizon = time.monotonic() - RECENT_S
        seen = {(i["pid"], i["exe"]): {"pid": i["pid"], "comm": i["comm"], "exe": i["exe"]}
                for t, i in self.recent if t >= horizon}
        return {**dict.fromkeys(IDENTITY), "attribution": None, "candidates": list(seen.values())[-5:]}

    def window(self, rows, window_s: float) -> list[dict]:
        """One `egress` event body per sending socket for this window's rows."""
        by_cookie: dict[int, dict[str, dict]] = {}
        for r in rows:
            t = by_cookie.setdefault(r.cookie, {}).setdefault(r.daddr, {
                "daddr": r.daddr, "family": r.family, "packets": 0, "syns": 0, "icmp": 0,
                "tcp": set(), "udp": set()})
            t["packets"] += r.packets
            t["syns"] += r.syns
            if r.proto in ("tcp", "udp"):
                t[r.proto].add(r.dport)
            else:
                t["icmp"] += r.packets
        out = []
        for cookie, targets in by_cookie.items():
            listed = sorted(targets.values(), key=lambda t: -(len(t["tcp"]) + len(t["udp"]) + t["icmp"]))
            body = {**self._owner(cookie), "cookie": cookie, "window_s": round(window_s, 3),
                    "packets": sum(t["packets"] for t in listed),
                    "syns": sum(t["syns"] for t in listed),
                    "icmp": sum(t["icmp"] for t in listed), "hosts": len(listed), "targets": []}
            for t in listed[:MAX_TARGETS]:
                body["targets"].append({
                    "daddr": t["daddr"], "family": t["family"], "packets": t["packets"],
                    "syns": t["syns"], "icmp": t["icmp"],
                    "tcp_port_count": len(t["tcp"]), "udp_port_count": len(t["udp"]),
                    "tcp_ports": sorted(t["tcp"])[:MAX_PORTS], "udp_ports": sorted(t["udp"])[:MAX_PORTS]})
            out.append(body)
        return out
