"""The connection monitor: bpf/conn_monitor.bpf.c. Tries the kprobe path
(tcp_v4_connect/tcp_v6_connect) and falls back, out loud, to the
sock:inet_sock_set_state tracepoint when kprobes are unavailable."""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from typing import Callable

from ..abi import MODE_NAMES, cflags
from . import KernelError
from .host import import_bcc, kprobes_unavailable_reason, program_source


def _addr(family: int, raw: bytes) -> tuple[str, str]:
    """(family name, address text); v4-mapped IPv6 is reported as IPv4."""
    if family == socket.AF_INET:
        return "ipv4", str(ipaddress.IPv4Address(bytes(raw[:4])))
    a = ipaddress.IPv6Address(bytes(raw[:16]))
    if a.ipv4_mapped is not None:
        return "ipv4", str(a.ipv4_mapped)
    return "ipv6", str(a)


@dataclass
class RawConnection:
    ts_ns: int
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


class ConnectionMonitor:
    """Outbound TCP connection events from the kernel, via a perf buffer."""

    def __init__(self, capture: str = "auto", page_cnt: int = 64,
                 warn: Callable[[str], None] = print):
        if capture not in ("auto", "kprobe", "tracepoint"):
            raise ValueError("capture must be auto, kprobe or tracepoint")
        self.capture = capture
        self.page_cnt = page_cnt
        self.warn = warn
        self.bpf = None
        self.mode: str | None = None
        self.fallback_reason: str | None = None

    def source_and_flags(self, mode: str) -> tuple[str, list[str]]:
        flags = cflags(max_bans=1)
        if mode == "kprobe":
            flags.append("-DNS_CAPTURE_KPROBE=1")
        return program_source("conn_monitor.bpf.c"), flags

    def start(self, on_event: Callable[[RawConnection], None], on_lost: Callable[[int], None]) -> str:
        bcc = import_bcc()
        if self.capture in ("auto", "kprobe"):
            reason = kprobes_unavailable_reason()
            if reason is None:
                try:
                    self._load_kprobe(bcc)
                except Exception as e:  # BCC raises plain Exception on attach failure
                    reason = f"kprobe attach failed: {str(e).splitlines()[0]}"
                    self._cleanup_bpf()
            if self.mode is None:
                if self.capture == "kprobe":
                    raise KernelError(f"--capture kprobe: {reason}")
                self.fallback_reason = reason
        if self.mode is None:
            if not bcc.BPF.tracepoint_exists("sock", "inet_sock_set_state"):
                raise KernelError("neither kprobes nor the sock:inet_sock_set_state tracepoint "
                                  "is available: cannot monitor connections on this kernel")
            src, flags = self.source_and_flags("tracepoint")
            self.bpf = bcc.BPF(text=src, cflags=flags)  # TRACEPOINT_PROBE attaches itself
            self.mode = "tracepoint"

        def handle(cpu, data, size):
            e = self.bpf["conn_events"].event(data)
            family, daddr = _addr(e.family, bytes(e.daddr))
            saddr = _addr(e.family, bytes(e.saddr))[1] if e.has_saddr else None
            on_event(RawConnection(
                ts_ns=e.ts_ns, pid=e.pid, tid=e.tid, uid=e.uid,
                comm=e.comm.decode("utf-8", "surrogateescape"), family=family,  # lossless, see byte_exact
                # SYN_SENT is set before the source port is picked: 0 means unknown.
                saddr=saddr, sport=e.sport or None,
                daddr=daddr, dport=e.dport, mode=MODE_NAMES.get(e.mode, "unknown")))

        self.bpf["conn_events"].open_perf_buffer(handle, page_cnt=self.page_cnt,
                                                 lost_cb=lambda n: on_lost(int(n)))
        return self.mode

    def _load_kprobe(self, bcc) -> None:
        src, flags = self.source_and_flags("kprobe")
        self.bpf = bcc.BPF(text=src, cflags=flags)
        self.bpf.attach_kprobe(event=b"tcp_v4_connect", fn_name=b"ns_kprobe_v4")
        try:
            self.bpf.attach_kprobe(event=b"tcp_v6_connect", fn_name=b"ns_kprobe_v6")
        except Exception as e:
            self.warn(f"IPv6 kprobe unavailable ({str(e).splitlines()[0]}); IPv4 only")
        self.mode = "kprobe"

    def poll(self, timeout_ms: int) -> None:
        self.bpf.perf_buffer_poll(timeout=timeout_ms)

    def _cleanup_bpf(self) -> None:
        if self.bpf is not None:
            try:
                self.bpf.cleanup()
            finally:
                self.bpf = None

    def stop(self) -> None:
        self._cleanup_bpf()
