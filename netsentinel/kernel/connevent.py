"""One connection event of bpf/conn_monitor.bpf.c (struct ns_conn_event),
decoded straight from its raw bytes: no ctypes object, no ipaddress object
per event (kernel/monitor.py reads them)."""

from __future__ import annotations

import ipaddress
import socket
import struct
from dataclasses import dataclass

from ..abi import MODE_NAMES

# struct ns_conn_event (bpf/netsentinel.h), little-endian as the kernel writes it.
EVENT = struct.Struct("<QQIIIHHHBB16s16s16s")
_V4_MAPPED = b"\0" * 10 + b"\xff\xff"
_V4_COMPAT = b"\0" * 12


def _addr(family: int, raw: bytes) -> tuple[str, str]:
    """(family name, address text); v4-mapped IPv6 is reported as IPv4."""
    if family == socket.AF_INET:
        return "ipv4", socket.inet_ntop(socket.AF_INET, raw[:4])
    raw = raw[:16]
    if raw[:12] == _V4_MAPPED:
        return "ipv4", socket.inet_ntop(socket.AF_INET, raw[12:])
    if raw[:12] == _V4_COMPAT:
        # glibc writes ::a.b.c.d here; keep the text ipaddress (and so the
        # rest of the project) uses for these rare addresses.
        return "ipv6", str(ipaddress.IPv6Address(raw))
    return "ipv6", socket.inet_ntop(socket.AF_INET6, raw)


@dataclass
class RawConnection:
    ts_ns: int
    # The process's start (CLOCK_BOOTTIME ns, its group leader's
    # start_boottime): with pid, exactly which process. 0: unknown.
    start_ns: int
    pid: int
    tid: int
    uid: int
    comm: str
    family: str
    saddr: str | None
    sport: int | None
    daddr: str
    dport: int
    mode: str
    # Folded (the ring buffer was full: bpf/conn_monitor.bpf.c): the connects
    # this one stands for, itself included, and the last one's time.
    count: int = 1
    last_ns: int = 0


def decode(data: bytes) -> RawConnection:
    (ts_ns, start_ns, pid, tid, uid, family, dport, sport, mode, has_saddr,
     saddr, daddr, comm) = EVENT.unpack_from(data)
    fam, dtext = _addr(family, daddr)
    return RawConnection(
        ts_ns=ts_ns, start_ns=start_ns, pid=pid, tid=tid, uid=uid,
        comm=comm.split(b"\0", 1)[0].decode("utf-8", "surrogateescape"),  # lossless, see byte_exact
        family=fam,
        # SYN_SENT is set before the source port is picked: 0 means unknown.
        saddr=_addr(family, saddr)[1] if has_saddr else None, sport=sport or None,
        daddr=dtext, dport=dport, mode=MODE_NAMES.get(mode, "unknown"))
