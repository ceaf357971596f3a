"""Which process a connection event came from, exactly, and which processes
the loader has read already (bpf/conn_monitor.bpf.c: the event's start_ns,
the conn_known map).

The start is the process's start_boottime, read in the kernel through
offsets from the running kernel's BTF (kernel/btf.py CONN_OFFSETS): with
the pid it names one process (pids are reused), and loader/procinfo.py
matches it to /proc/PID/stat's start time. A process the loader has read
(know()) connects without waking the loader: its events wait for the next
poll, since the loader holds its reading whether it lives or not."""

from __future__ import annotations

import os
from typing import Callable

from ..abi import C
from .btf import CONN_OFFSETS, BTFError, offsets

KNOWN_MAX = C["NS_MAX_CONN_KNOWN"]


class ProcessStarts:
    def __init__(self, warn: Callable[[str], None]):
        self.warn = warn
        self._offsets: dict[str, int] | None = None   # None: not looked up yet; {}: unknown
        self.off_reason: str | None = None             # why unknown
        self._map = None                               # conn_known, once loaded (ring buffer only)
        self._told: dict[int, int] = {}                # what was put in it: tgid -> start_ns

    def offsets(self) -> dict[str, int]:
        """The -D offsets the program reads the start with, looked up once;
        {} (said in one warning) where this kernel's BTF lacks them."""
        if self._offsets is None:
            try:
                self._offsets = offsets(CONN_OFFSETS)
            except BTFError as e:
                # The loader runs on: events carry start 0 (ProcCache's
                # time-window rule decides) and every connect wakes the poll.
                self._offsets = {}
                self.off_reason = str(e)
                self.warn(f"connection events carry no process start time ({e}); "
                          "pid reuse is judged by time windows")
        return self._offsets

    def cflags(self, ring_bytes: int | None, record_size: int) -> list[str]:
        """The start's offsets, and (ring buffer) how many quiet connects a
        CPU puts in before one wakes the reader anyway: a quarter of the ring
        shared by the CPUs, so a burst is read before the ring is full."""
        flags = [f"-D{name}={off}" for name, off in self.offsets().items()]
        if ring_bytes:
            every = ring_bytes // 4 // (record_size + 8) // (os.cpu_count() or 1)
            flags.append(f"-DNS_CONN_WAKE_EVERY={max(1, every)}")
        return flags

    def attach(self, bpf) -> None:
        if self._offsets:
            self._map = bpf["conn_known"]

    def know(self, pid: int, start_ns: int) -> None:
        """The caller has read this process (pid, started at start_ns) in
        /proc: its further connects may wait for the next poll. A dict
        look-up per event; one map update per new process."""
        if self._map is None or not start_ns or self._told.get(pid) == start_ns:
            return
        if len(self._told) >= 2 * KNOWN_MAX:
            self._told.clear()   # the kernel's LRU forgets on its own; this only re-tells it
        self._told[pid] = start_ns
        m = self._map
        m[m.Key(pid)] = m.Leaf(start_ns)

    def told(self, pid: int) -> int | None:
        """The start the kernel's conn_known holds for pid (tests)."""
        m = self._map
        return None if m is None else m[m.Key(pid)].value

    def detach(self) -> None:
        self._map = None
        self._told.clear()
