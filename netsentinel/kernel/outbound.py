"""The outbound monitor: bpf/outbound.bpf.c. Reports every raw (SOCK_RAW) and
packet (AF_PACKET) socket a process creates, from the syscall tracepoints on
socket(): the tools whose packets never pass through connect(); and what
ordinary UDP sockets send, per process x destination x port (cgroup
sendmsg/connect hooks, links owned by this process)."""

from __future__ import annotations

import ipaddress
import os
import socket
from dataclasses import dataclass
from typing import Callable

from . import KernelError
from ..abi import cflags
from .host import ensure_cgroup2_root, import_bcc, program_source
from .libbpf import (ATTACH_CGROUP_INET4_CONNECT, ATTACH_CGROUP_INET6_CONNECT,
                     ATTACH_CGROUP_UDP4_SENDMSG, ATTACH_CGROUP_UDP6_SENDMSG, link_create, link_destroy)

ATTACH_TCX_EGRESS = 47   # enum bpf_attach_type BPF_TCX_EGRESS (include/uapi/linux/bpf.h)
ATTACH_CGROUP_UDP4_RECVMSG, ATTACH_CGROUP_UDP6_RECVMSG = 19, 20   # enum bpf_attach_type
UDP_HOOKS = (("ns_udp_sendmsg4", ATTACH_CGROUP_UDP4_SENDMSG), ("ns_udp_sendmsg6", ATTACH_CGROUP_UDP6_SENDMSG),
             ("ns_udp_connect4", ATTACH_CGROUP_INET4_CONNECT), ("ns_udp_connect6", ATTACH_CGROUP_INET6_CONNECT),
             ("ns_udp_recvmsg4", ATTACH_CGROUP_UDP4_RECVMSG), ("ns_udp_recvmsg6", ATTACH_CGROUP_UDP6_RECVMSG))
UDP_VIA = {1: "sendmsg", 2: "connect"}
UDP_PAGES = 64

AF_PACKET = 17
FAMILIES = {socket.AF_INET: "ipv4", socket.AF_INET6: "ipv6", AF_PACKET: "packet"}
SOCK_TYPES = {1: "stream", 2: "dgram", 3: "raw", 4: "rdm", 5: "seqpacket", 10: "packet"}
IP_PROTOCOLS = {0: "ip", 1: "icmp", 2: "igmp", 6: "tcp", 17: "udp", 58: "icmpv6", 132: "sctp",
                255: "raw"}
ETHER_TYPES = {0x0000: "none (send only)", 0x0003: "all", 0x0800: "ipv4", 0x0806: "arp", 0x86DD: "ipv6", 0x88CC: "lldp"}


def protocol_name(family: int, protocol: int) -> str:
    """The protocol argument in words: an IP protocol, or for packet sockets
    an ethertype (passed in network byte order, as htons(ETH_P_ALL))."""
    if family == AF_PACKET:
        ether = socket.ntohs(protocol & 0xFFFF)
        return ETHER_TYPES.get(ether, f"ethertype 0x{ether:04x}")
    return IP_PROTOCOLS.get(protocol, str(protocol))


@dataclass
class EgressRow:
    """What one raw/packet socket sent to one destination port in a window."""
    cookie: int
    family: str
    daddr: str
    proto: str       # tcp, udp, icmp, icmpv6
    dport: int       # 0 for ICMP
    packets: int
    syns: int


@dataclass
class UdpFlow:
    """The first datagram (or connect()) of one process to one UDP destination port."""
    ts_ns: int
    pid: int
    tid: int
    uid: int
    comm: str
    exec_path: str | None
    family: str
    daddr: str
    dport: int
    via: str         # sendmsg or connect


@dataclass
class UdpRow:
    """What one process sent to one UDP destination port since the last read."""
    pid: int
    family: str
    daddr: str
    dport: int
    datagrams: int
    connects: int


def _addr(family: int, raw: bytes) -> tuple[str, str]:
    """A flow's destination; a dual-stack socket's v4-mapped address as the
    IPv4 address it is (one host, whichever socket reached it)."""
    if family == 4:
        return "ipv4", str(ipaddress.IPv4Address(raw[:4]))
    v6 = ipaddress.IPv6Address(raw[:16])
    return ("ipv4", str(v6.ipv4_mapped)) if v6.ipv4_mapped else ("ipv6", str(v6))


@dataclass
class StdioDup:
    """A process that made an outbound TCP connection put something on fd 0 or 1."""
    pid: int
    tid: int
    uid: int
    newfd: int
    comm: str


@dataclass
class RawSocket:
    ts_ns: int
    pid: int
    tid: int
    uid: int
    fd: int
    comm: str
    family: str
    sock_type: str
    protocol: int
    protocol_name: str
    exec_path: str | None   # as given to execve, recorded by the kernel


class OutboundMonitor:
    """Raw/packet socket events from the kernel, via a perf buffer."""

    def __init__(self, page_cnt: int = 8, warn: Callable[[str], None] = print):
        self.page_cnt = page_cnt
        self.warn = warn
        self.bpf = None
        self.egress_link: int | None = None
        self.egress_interface: str | None = None
        self.udp_links: list[int] = []
        self.udp_error: str | None = None
        self.on_udp: Callable[[UdpFlow], None] | None = None   # set by the loader's Outbound
        self.udp_lost = 0   # first-datagram sightings lost (perf buffer full)

    def start(self, on_event: Callable[[RawSocket], None], on_lost: Callable[[int], None],
              on_stdio: Callable[[StdioDup], None] | None = None) -> None:
        bcc = import_bcc()
        for tp in ("sys_enter_socket", "sys_exit_socket", "sys_exit_dup", "sys_exit_dup2",
                   "sys_exit_dup3"):
            if not bcc.BPF.tracepoint_exists("syscalls", tp):
                raise KernelError(f"the syscalls:{tp} tracepoint is missing (CONFIG_FTRACE_SYSCALLS "
                                  "off): raw sockets cannot be watched; run with --no-raw-sockets")
        try:  # TRACEPOINT_PROBE attaches itself when the object loads
            self.bpf = bcc.BPF(text=program_source("outbound.bpf.c"), cflags=cflags(max_bans=1))
        except Exception as e:  # BCC raises bare Exception on compile/load/attach errors
            raise KernelError(f"bpf/outbound.bpf.c did not load ({str(e).splitlines()[0]}); "
                              "run with --no-raw-sockets to go on without raw-socket events") from e

        def handle(cpu, data, size):
            e = self.bpf["raw_events"].event(data)
            on_event(RawSocket(
                ts_ns=e.ts_ns, pid=e.pid, tid=e.tid, uid=e.uid, fd=e.fd,
                comm=e.comm.decode("utf-8", "surrogateescape"),
                family=FAMILIES.get(e.family, str(e.family)),
                sock_type=SOCK_TYPES.get(e.type & 0xF, str(e.type & 0xF)),
                protocol=int(e.protocol), protocol_name=protocol_name(e.family, e.protocol),
                exec_path=e.exec_path.decode("utf-8", "surrogateescape") or None))

        self.bpf["raw_events"].open_perf_buffer(handle, page_cnt=self.page_cnt,
                                                lost_cb=lambda n: on_lost(int(n)))

        def handle_stdio(cpu, data, size):
            e = self.bpf["stdio_events"].event(data)
            if on_stdio is not None:
                on_stdio(StdioDup(pid=e.pid, tid=e.tid, uid=e.uid, newfd=e.newfd,
                                  comm=e.comm.decode("utf-8", "surrogateescape")))

        self.bpf["stdio_events"].open_perf_buffer(handle_stdio, page_cnt=self.page_cnt,
                                                  lost_cb=lambda n: on_lost(int(n)))

        def handle_udp(cpu, data, size):
            e = self.bpf["udp_events"].event(data)
            if self.on_udp is not None:
                fam, daddr = _addr(e.family, bytes(e.daddr))
                self.on_udp(UdpFlow(ts_ns=e.ts_ns, pid=e.pid, tid=e.tid, uid=e.uid,
                                    comm=e.comm.decode("utf-8", "surrogateescape"),
                                    exec_path=e.exec_path.decode("utf-8", "surrogateescape") or None,
                                    family=fam, daddr=daddr, dport=int(e.dport),
                                    via=UDP_VIA.get(e.via, str(e.via))))

        def udp_lost(n):
            self.udp_lost += int(n)

        # Bigger: a UDP scan announces a new flow per port. A lost sighting
        # costs only the moment of the /proc read (the window reads it then).
        self.bpf["udp_events"].open_perf_buffer(handle_udp, page_cnt=max(self.page_cnt, UDP_PAGES),
                                                lost_cb=udp_lost)
        self._attach_udp()

    def _attach_udp(self) -> None:
        """The cgroup UDP hooks at the cgroup2 root, as links of this process
        (beside the enforcer's pinned ones: a hook runs every attached link).
        Monitoring only: when they cannot attach, udp_error says why and the
        rest goes on."""
        bcc = import_bcc()
        try:
            cg_fd = os.open(ensure_cgroup2_root(), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except (OSError, KernelError) as e:
            self.udp_error = f"no cgroup2 root for the UDP hooks ({e})"
            return
        try:
            for name, attach_type in UDP_HOOKS:
                fn = self.bpf.load_func(name.encode(), bcc.BPF.CGROUP_SOCK_ADDR, attach_type=attach_type)
                self.udp_links.append(link_create(fn.fd, cg_fd, attach_type))
        except OSError as e:
            self.udp_error = f"cannot attach {name} to the cgroup2 root ({e.strerror})"
        except Exception as e:  # BCC's load errors are bare Exceptions
            self.udp_error = f"{name} did not load ({str(e).splitlines()[0]})"
        finally:
            os.close(cg_fd)
        if self.udp_error:
            self._detach_udp()
            self.warn(f"{self.udp_error}: no udp events (raw_socket events still are reported)")

    def _detach_udp(self) -> None:
        links, self.udp_links = self.udp_links, []
        for link in links:
            link_destroy(link)

    def read_udp(self) -> list[UdpRow]:
        """Every UDP flow's counts since the last call (the map is emptied;
        udp_seen is not, so a flow's first datagram is reported once)."""
        if not self.udp_links:
            return []
        rows = []
        for k, v in _drain(self.bpf["udp_counts"]):
            fam, daddr = _addr(k.family, bytes(k.daddr))
            rows.append(UdpRow(int(k.pid), fam, daddr, int(k.dport), int(v.datagrams), int(v.connects)))
        return rows

    def attach_egress(self, interface: str) -> None:
        """ns_egress as a TCX egress link on interface (owned by this process:
        the kernel detaches it if the loader dies)."""
        bcc = import_bcc()
        try:
            ifindex = socket.if_nametoindex(interface)
            fn = self.bpf.load_func(b"ns_egress", bcc.BPF.SCHED_CLS)
            self.egress_link = link_create(fn.fd, ifindex, ATTACH_TCX_EGRESS)
        except OSError as e:
            raise KernelError(f"cannot attach the egress counter to {interface} ({e.strerror}; "
                              "TCX egress needs Linux 6.6+)") from e
        except Exception as e:  # BCC's load errors are bare Exceptions
            raise KernelError(f"ns_egress did not load ({str(e).splitlines()[0]})") from e
        self.egress_interface = interface

    def read_egress(self) -> list[EgressRow]:
        """Everything counted since the last call (the map is emptied)."""
        if self.egress_link is None:
            return []
        rows = []
        for k, v in _drain(self.bpf["egress_stats"]):
            raw = bytes(k.daddr)
            fam = "ipv4" if k.family == 4 else "ipv6"
            daddr = str(ipaddress.IPv4Address(raw[:4]) if k.family == 4 else ipaddress.IPv6Address(raw))
            proto = {6: "tcp", 17: "udp", 1: "icmp", 58: "icmpv6"}.get(k.proto, str(k.proto))
            rows.append(EgressRow(int(k.cookie), fam, daddr, proto, int(k.dport), int(v.packets),
                                  int(v.syns)))
        return rows

    def poll(self, timeout_ms: int = 0) -> None:
        if self.bpf is not None:
            self.bpf.perf_buffer_poll(timeout=timeout_ms)

    def stop(self) -> None:
        self._detach_udp()
        if self.egress_link is not None:
            link, self.egress_link = self.egress_link, None
            link_destroy(link)
        if self.bpf is not None:
            try:
                self.bpf.cleanup()
            finally:
                self.bpf = None


def _drain(table) -> list:
    """Read and empty a hash map: one batch call where the kernel has it."""
    try:
        return list(table.items_lookup_and_delete_batch())
    except Exception:  # batch ops missing: read, then delete what was read
        items = list(table.items())
        for k, _ in items:
            try:
                del table[k]
            except KeyError:
                pass
        return items
