"""The connection monitor: bpf/conn_monitor.bpf.c. Tries the kprobe path
(tcp_v4_connect/tcp_v6_connect) and falls back, out loud, to the
sock:inet_sock_set_state tracepoint when kprobes are unavailable.

Events come through a BPF ring buffer (kernel >= 5.8; the perf buffer on
older kernels), decoded straight from the raw bytes (no ctypes object, no
ipaddress object per event). A connect of a process the loader has read
already (know(): kernel/connknown.py) wakes nobody: such connects are
read in batches, when the poll's timeout ends or another process's connect
wakes it (bpf/conn_monitor.bpf.c), so the loader's loop turns once per batch,
not once per event. A poll that wakes to a few events (processes not read
yet: a scanner's children, every process without the start in the events,
i.e. without BTF offsets) handles them as they come and waits GATHER_S for
more before it returns. A poll hands
over at most POLL_BUDGET events or POLL_BUDGET_S seconds of them: under a
connect flood the buffer never runs dry, and the loader's other work
(flushing the stream, status) must still get its turn. Losses are counted by the kernel at the moment the
buffer is full (conn_lost) and reported from here at most every
LOST_EVERY_S. Before each event it looks at `gate` (loader/wake.py): while a
command is going into the kernel it waits there, without the GIL."""

from __future__ import annotations

import ctypes
import mmap
import os
import select
import time
from types import SimpleNamespace
from typing import Callable

from ..abi import cflags
from . import KernelError, ringread
from .batchread import BatchReader
from .connknown import ProcessStarts
from .connevent import EVENT, RawConnection, decode
from .host import import_bcc, kprobes_unavailable_reason, program_source

POLL_BUDGET = 4096
POLL_BUDGET_S = 0.02
LOST_EVERY_S = 1.0
PAGE = mmap.PAGESIZE
FOLDS_EVERY_S = 0.05   # folded connects (a full ring buffer) handed on at least this often
SPARSE = 64            # a poll that found fewer events than this ...
GATHER_S = 0.01        # ... goes on handling them as they come this long (see _poll_raw)


def ring_pages(page_cnt: int) -> int:
    """Ring buffer pages for --buffer-pages N (per CPU, as the perf buffer
    counts them): the same memory in all, as the power of two the kernel needs."""
    want = max(1, page_cnt * (os.cpu_count() or 1))
    return 1 << (want - 1).bit_length()


class ConnectionMonitor:
    """Outbound TCP connection events from the kernel, via a ring buffer."""

    def __init__(self, capture: str = "auto", page_cnt: int = 64,
                 warn: Callable[[str], None] = print, ring: bool | None = None,
                 raw_ring: bool = True):
        if capture not in ("auto", "kprobe", "tracepoint"):
            raise ValueError("capture must be auto, kprobe or tracepoint")
        self.capture = capture
        self.page_cnt = page_cnt
        self.warn = warn
        self.bpf = None
        self.mode: str | None = None
        self.fallback_reason: str | None = None
        # None: the ring buffer where the kernel has one (BPF_MAP_TYPE_RINGBUF, 5.8)
        self.ring = ring
        self.lost_total = 0
        self._on_lost: Callable[[int], None] = lambda n: None
        self._lost_at = 0.0
        self._stop_at = 0.0
        self._budget = 0
        self._lost_map = None
        # The ring buffer read in place (kernel/ringread.py) where it may be;
        # raw_ring=False keeps BCC's per-record callback (the bench compares them).
        self.raw_ring = raw_ring
        self._reader: ringread.RingReader | None = None
        self._poller = None
        self._gather = False   # whether a sparse poll waits GATHER_S for more (start())
        self._on_event: Callable[[RawConnection], None] | None = None
        self._folds: BatchReader | None = None   # conn_folds (ring buffer only)
        self._folds_at = 0.0
        self.ring_reader_off_reason: str | None = None
        self.handler_errors = 0
        self.gate = SimpleNamespace(shut=False)   # never shut: the monitor alone (tests, bench)
        self.starts = ProcessStarts(warn)   # the process's start in events; conn_known
        self.know = self.starts.know

    def source_and_flags(self, mode: str) -> tuple[str, list[str]]:
        flags = cflags(max_bans=1)
        if mode == "kprobe":
            flags.append("-DNS_CAPTURE_KPROBE=1")
        ring_bytes = None
        if self.ring is False:
            flags.append("-DNS_CONN_PERF=1")
        else:
            pages = ring_pages(int(self.page_cnt))
            flags.append(f"-DNS_CONN_RING_PAGES={pages}")
            ring_bytes = pages * PAGE
        flags += self.starts.cflags(ring_bytes, EVENT.size)
        return program_source("conn_monitor.bpf.c"), flags

    def start(self, on_event: Callable[[RawConnection], None], on_lost: Callable[[int], None]) -> str:
        bcc = import_bcc()
        if self.ring is None:
            self.ring = _kernel_at_least(5, 8)
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
        self._on_lost = on_lost
        string_at = ctypes.string_at
        size = EVENT.size

        if not self.ring:
            def handle_perf(cpu, data, _size):
                if self.gate.shut:
                    self.gate.pause()
                on_event(decode(string_at(data, size)))
            self.bpf["conn_events"].open_perf_buffer(handle_perf, page_cnt=self.page_cnt,
                                                     lost_cb=lambda n: self._lost(int(n)))
            return self.mode

        self._on_event = on_event
        self._lost_map = self.bpf["conn_lost"]
        self.starts.attach(self.bpf)
        self._folds = BatchReader(self.bpf["conn_folds"], ("last_ns", "count"), ("pid",))
        why_not = ringread.available() if self.raw_ring else "asked for BCC's callback"
        if why_not is None:
            table = self.bpf["conn_events"]
            try:
                self._reader = ringread.RingReader(table.map_fd, int(table.max_entries))
                # Gathering only where the ring holds a read's budget and more
                # (the default buffer does): filling it within GATHER_S takes
                # over 400,000 connects/s; a smaller ring's poll returns at once.
                self._gather = int(table.max_entries) // (EVENT.size + 8) >= POLL_BUDGET
            except (OSError, ValueError) as e:   # a kernel that refuses the mapping: BCC's way
                why_not = f"mapping the ring buffer failed ({e})"
        if self._reader is not None:
            self._poller = select.poll()
            self._poller.register(self._reader.fileno(), select.POLLIN)
            return self.mode
        self.ring_reader_off_reason = why_not

        def handle_ring(ctx, data, _size):
            if self.gate.shut:
                self.gate.pause()
            on_event(decode(string_at(data, size)))
            # Returning < 0 ends this poll (libbpf has consumed this record):
            # the budget keeps a flood from holding the loop (see the top).
            self._budget -= 1
            if self._budget <= 0 or ((self._budget & 255) == 0 and time.monotonic() > self._stop_at):
                return -1
            return 0
        self.bpf["conn_events"].open_ring_buffer(handle_ring)
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

    def _lost(self, n: int) -> None:
        if n > 0:
            self.lost_total += n
            self._on_lost(n)

    def kernel_lost(self) -> int:
        """Events the kernel could not put in the ring buffer, in all
        (perf buffer: as many as it has reported)."""
        if self._lost_map is None:
            return self.lost_total
        return sum(int(v) for v in self._lost_map.getvalue(0))

    def poll(self, timeout_ms: int) -> None:
        if not self.ring:
            self.bpf.perf_buffer_poll(timeout=timeout_ms)
            return
        if self._reader is not None:
            self._poll_raw(timeout_ms)
        else:
            self._budget, self._stop_at = POLL_BUDGET, time.monotonic() + POLL_BUDGET_S
            self.bpf.ring_buffer_poll(timeout=timeout_ms)
        now = time.monotonic()
        if now - self._folds_at >= FOLDS_EVERY_S:
            self._folds_at = now
            self.drain_folds()
        if now - self._lost_at >= LOST_EVERY_S:
            self._lost_at = now
            self._lost(self.kernel_lost() - self.lost_total)

    def _poll_raw(self, timeout_ms: int) -> None:
        """The ring buffer read in place (kernel/ringread.py): wait for data
        as ring_buffer_poll does (the map's fd), then at most POLL_BUDGET
        records or POLL_BUDGET_S seconds of them (see the top).

        Events that come a few at a time (a read finding fewer than SPARSE)
        are each handled as they come, at once (a short-lived process is
        read in /proc while it lives), but the poll goes on waiting for more
        for GATHER_S before it returns: the loader's other work (the raw and
        stdio buffers, the held events, the stream's write) then runs once
        per GATHER_S, not once per event (at 1,000 connects/s it was most of
        the loader's CPU)."""
        reader = self._reader
        gate = self.gate

        def handle(record: bytes) -> None:
            if gate.shut:
                gate.pause()
            self._deliver(decode(record))
        if not reader.pending():
            self._poller.poll(timeout_ms)
        stop_at, left = time.monotonic() + POLL_BUDGET_S, POLL_BUDGET
        gather_until = None
        while left > 0:
            n = reader.consume(handle, min(256, left))
            left -= n
            now = time.monotonic()
            if n == 256:
                if now > stop_at:
                    break
                continue
            if not self._gather or POLL_BUDGET - left >= SPARSE or not n:
                break
            gather_until = gather_until or now + GATHER_S
            if now >= gather_until:
                break
            self._poller.poll(max(1, int((gather_until - now) * 1000)))

    def drain_folds(self) -> int:
        """Connects the kernel folded while the ring buffer was full, each
        (process, destination, port) handed on once with its count; read
        and deleted in one go (the kernel's batch lookup-and-delete holds
        each bucket's lock: a connect folded meanwhile starts a new entry).
        Returns how many connects they stand for."""
        if self._folds is None:
            return 0
        reader = self._folds
        reader.read(delete=True)
        total = 0
        gate = self.gate
        for i, (last_ns, count) in enumerate(reader.values()):
            if gate.shut:
                gate.pause()
            raw = decode(reader.leaf_bytes(i))
            raw.count, raw.last_ns = count, last_ns
            total += count
            self._deliver(raw)
        return total

    def _deliver(self, raw: RawConnection) -> None:
        """The caller's on_event(raw); a fault in handling one event is said (the first
        few, then every thousandth) and the stream goes on, as BCC's callback
        does (ctypes prints and drops an exception raised in a callback)."""
        try:
            self._on_event(raw)
        except Exception as e:  # noqa: BLE001 - one event's fault must not end monitoring
            self.handler_errors += 1
            if self.handler_errors <= 3 or self.handler_errors % 1000 == 0:
                self.warn(f"a connection event could not be handled ({self.handler_errors} so far): "
                          f"{type(e).__name__}: {str(e)[:200]}")

    def _cleanup_bpf(self) -> None:
        self._folds = None
        self.starts.detach()
        if self._reader is not None:
            self._reader.close()
            self._reader = self._poller = None
        if self.bpf is not None:
            try:
                self.bpf.cleanup()
            finally:
                self.bpf = None

    def stop(self) -> None:
        if self.bpf is not None and self.ring:
            try:  # the last folds and losses, so the stream and the final stats are complete
                self.drain_folds()
                self._lost(self.kernel_lost() - self.lost_total)
            except Exception:  # noqa: BLE001 - the map may be gone with a failed start
                pass
        self._cleanup_bpf()


def _kernel_at_least(major: int, minor: int) -> bool:
    try:
        have = tuple(int(x) for x in os.uname().release.split("-")[0].split(".")[:2])
    except ValueError:
        return True   # an odd release string: try the ring buffer, BCC says if it fails
    return have >= (major, minor)
