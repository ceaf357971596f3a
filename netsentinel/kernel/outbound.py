"""The outbound monitor: bpf/outbound.bpf.c. Reports every raw (SOCK_RAW) and
packet (AF_PACKET) socket a process creates, from the syscall tracepoints on
socket(): the tools whose packets never pass through connect()."""

from __future__ import annotations

import socket
from dataclasses import dataclass
from typing import Callable

from . import KernelError
from .host import cflags, import_bcc, program_source

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

    def start(self, on_event: Callable[[RawSocket], None], on_lost: Callable[[int], None]) -> None:
        bcc = import_bcc()
        for tp in ("sys_enter_socket", "sys_exit_socket"):
            if not bcc.BPF.tracepoint_exists("syscalls", tp):
                raise KernelError(f"the syscalls:{tp} tracepoint is missing (CONFIG_FTRACE_SYSCALLS "
                                  "off): raw sockets cannot be watched; run with --no-raw-sockets")
        try:  # TRACEPOINT_PROBE attaches itself when the object loads
            self.bpf = bcc.BPF(text=program_source("outbound.bpf.c"), cflags=cflags(1))
        except Exception as e:  # BCC raises bare Exception on compile/load/attach errors
            raise KernelError(f"bpf/outbound.bpf.c did not load ({str(e).splitlines()[0]}); "
                              "run with --no-raw-sockets to go on without raw-socket events") from e

        def handle(cpu, data, size):
            e = self.bpf["raw_events"].event(data)
            on_event(RawSocket(
                ts_ns=e.ts_ns, pid=e.pid, tid=e.tid, uid=e.uid, fd=e.fd,
                comm=e.comm.decode("utf-8", "replace"),
                family=FAMILIES.get(e.family, str(e.family)),
                sock_type=SOCK_TYPES.get(e.type & 0xF, str(e.type & 0xF)),
                protocol=int(e.protocol), protocol_name=protocol_name(e.family, e.protocol),
                exec_path=e.exec_path.decode("utf-8", "replace") or None))

        self.bpf["raw_events"].open_perf_buffer(handle, page_cnt=self.page_cnt,
                                                lost_cb=lambda n: on_lost(int(n)))

    def poll(self, timeout_ms: int = 0) -> None:
        if self.bpf is not None:
            self.bpf.perf_buffer_poll(timeout=timeout_ms)

    def stop(self) -> None:
        if self.bpf is not None:
            try:
                self.bpf.cleanup()
            finally:
                self.bpf = None
