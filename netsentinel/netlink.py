"""The kernel's own answers about this host's network, over netlink: its
addresses (RTM_GETADDR), its default routes (RTM_GETROUTE) and its
established TCP sessions on given local ports (NETLINK_SOCK_DIAG, filtered
in the kernel).

What `ip -j addr`, `ip -j route show default` and /proc/net/tcp{,6} told
netinfo before, without a process started per look or the whole TCP table
printed and parsed: the loader refreshes the protected set every few
seconds, and those looks were most of its idle CPU (10 ms a refresh, and
/proc/net/tcp walks the host's whole connection hash to print it).

Every function raises OSError when the kernel refuses (netinfo turns that
into "nothing known", as it did for a failed `ip`)."""

from __future__ import annotations

import ipaddress
import os
import socket
import struct
from collections.abc import Iterator

NETLINK_ROUTE, NETLINK_SOCK_DIAG = 0, 4
NLM_F_REQUEST, NLM_F_DUMP = 0x1, 0x300
NLMSG_ERROR, NLMSG_DONE = 2, 3
RTM_GETADDR, RTM_NEWADDR, RTM_GETROUTE, RTM_NEWROUTE = 22, 20, 26, 24
SOCK_DIAG_BY_FAMILY = 20
IFA_ADDRESS, IFA_LOCAL = 1, 2
RTA_DST, RTA_OIF, RTA_GATEWAY, RTA_MULTIPATH, RTA_TABLE, RTA_VIA = 1, 4, 5, 9, 15, 18
RT_TABLE_MAIN, RTN_UNICAST = 254, 1
TCP_ESTABLISHED = 1
INET_DIAG_REQ_BYTECODE = 1
INET_DIAG_BC_JMP, INET_DIAG_BC_S_EQ = 1, 11

_HDR = struct.Struct("=IHHII")     # nlmsghdr: len, type, flags, seq, pid
_RTA = struct.Struct("=HH")        # rtattr: len, type
_OP = struct.Struct("=BBH")        # inet_diag_bc_op: code, yes, no
_RTNH = struct.Struct("=HBBi")     # rtnexthop: len, flags, hops, ifindex


def _align(n: int) -> int:
    return (n + 3) & ~3


def _dump(proto: int, msg_type: int, body: bytes) -> Iterator[tuple[int, bytes]]:
    """(type, payload) of every message a dump request answers."""
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, proto) as s:
        s.sendto(_HDR.pack(_HDR.size + len(body), msg_type, NLM_F_REQUEST | NLM_F_DUMP, 1, 0) + body, (0, 0))
        while True:
            data = s.recv(1 << 16)
            if not data:
                return
            off = 0
            while off + _HDR.size <= len(data):
                length, typ = _HDR.unpack_from(data, off)[:2]
                if length < _HDR.size:
                    raise OSError("netlink: a malformed message")
                if typ == NLMSG_DONE:
                    return
                if typ == NLMSG_ERROR:
                    err = -struct.unpack_from("=i", data, off + _HDR.size)[0]
                    if err:
                        raise OSError(err, f"netlink: {os.strerror(err)}")
                else:
                    yield typ, data[off + _HDR.size:off + length]
                off += _align(length)


def _attrs(buf: bytes, off: int) -> dict[int, bytes]:
    out = {}
    while off + _RTA.size <= len(buf):
        length, typ = _RTA.unpack_from(buf, off)
        if length < _RTA.size:
            break
        out.setdefault(typ & 0x3FFF, buf[off + _RTA.size:off + length])
        off += _align(length)
    return out


def _ip(family: int, raw: bytes) -> str | None:
    if family == socket.AF_INET and len(raw) >= 4:
        return str(ipaddress.IPv4Address(raw[:4]))
    if family == socket.AF_INET6 and len(raw) >= 16:
        a = ipaddress.IPv6Address(raw[:16])
        return str(a.ipv4_mapped or a)
    return None


def addresses() -> list[str]:
    """Every address of this host, as `ip addr` lists them (its "local")."""
    out = []
    for typ, msg in _dump(NETLINK_ROUTE, RTM_GETADDR, struct.pack("=BBBBi", socket.AF_UNSPEC, 0, 0, 0, 0)):
        if typ != RTM_NEWADDR or len(msg) < 8:
            continue
        a = _attrs(msg, 8)   # struct ifaddrmsg: family, prefixlen, flags, scope, index
        ip = _ip(msg[0], a.get(IFA_LOCAL) or a.get(IFA_ADDRESS) or b"")
        if ip is not None:
            out.append(ip)
    return out


def default_routes(family: int) -> list[tuple[str | None, int | None]]:
    """(gateway, output interface index) of each default route in the main
    table (`ip route show default`); a multipath route gives each hop."""
    out = []
    for typ, msg in _dump(NETLINK_ROUTE, RTM_GETROUTE, struct.pack("=BBBBBBBBI", family, 0, 0, 0, 0, 0, 0, 0, 0)):
        if typ != RTM_NEWROUTE or len(msg) < 12:
            continue
        fam, dst_len, _src, _tos, table, _proto, _scope, rtype = struct.unpack_from("=BBBBBBBB", msg)
        a = _attrs(msg, 12)
        if RTA_TABLE in a:
            table = struct.unpack_from("=I", a[RTA_TABLE])[0]
        if dst_len or table != RT_TABLE_MAIN or rtype != RTN_UNICAST:
            continue
        if RTA_MULTIPATH in a:
            out += _hops(fam, a[RTA_MULTIPATH])
        else:
            oif = struct.unpack_from("=i", a[RTA_OIF])[0] if len(a.get(RTA_OIF, b"")) >= 4 else None
            out.append((_gateway(fam, a), oif))
    return out


def _gateway(family: int, a: dict[int, bytes]) -> str | None:
    if RTA_GATEWAY in a:
        return _ip(family, a[RTA_GATEWAY])
    via = a.get(RTA_VIA, b"")
    if len(via) >= 2:   # struct rtvia: family, then the address (IPv4 routes via IPv6 hops)
        return _ip(struct.unpack_from("=H", via)[0], via[2:])
    return None


def _hops(family: int, buf: bytes) -> list[tuple[str | None, int | None]]:
    out, off = [], 0
    while off + _RTNH.size <= len(buf):
        length, _flags, _hops, ifindex = _RTNH.unpack_from(buf, off)
        if length < _RTNH.size:
            break
        out.append((_gateway(family, _attrs(buf[off:off + length], _RTNH.size)), ifindex))
        off += _align(length)
    return out


def _any_local_port(ports: list[int]) -> bytes:
    """inet_diag bytecode: the local port is one of ports. Each test goes on
    (yes) to the next op on a match, jumps (no) past the end on a miss; an
    OR is `a, JMP over b, b` with a's miss landing on b (as ss builds it)."""
    one = _OP.pack(INET_DIAG_BC_S_EQ, 8, 12) + _OP.pack(0, 0, ports[0])
    if len(ports) == 1:
        return one
    rest = _any_local_port(ports[1:])
    return one + _OP.pack(INET_DIAG_BC_JMP, 4, len(rest) + 4) + rest


def tcp_peers(ports: list[int]) -> list[str]:
    """The remote addresses of ESTABLISHED TCP sessions on these local ports
    (IPv4 peers of a dual-stack socket as IPv4), both families."""
    ports = sorted({int(p) for p in ports if 0 < int(p) < 65536})
    if not ports:
        return []
    code = _any_local_port(ports)
    attr = _RTA.pack(_RTA.size + len(code), INET_DIAG_REQ_BYTECODE) + code
    out = []
    for family in (socket.AF_INET, socket.AF_INET6):
        # struct inet_diag_req_v2: family, protocol, ext, pad, states, then a zeroed inet_diag_sockid
        req = struct.pack("=BBBBI", family, socket.IPPROTO_TCP, 0, 0, 1 << TCP_ESTABLISHED) + bytes(48)
        for _typ, msg in _dump(NETLINK_SOCK_DIAG, SOCK_DIAG_BY_FAMILY, req + attr):
            # struct inet_diag_msg: family, state, timer, retrans, then the
            # sockid: sport, dport (big-endian), src[16], dst[16], ...
            if len(msg) >= 40:
                ip = _ip(msg[0], msg[24:40])
                if ip is not None:
                    out.append(ip)
    return out
