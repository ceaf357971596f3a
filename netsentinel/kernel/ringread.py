"""A BPF ring buffer read in Python straight from its memory map, as
libbpf's ring_buffer__consume does (tools/lib/bpf/ringbuf.c), without a
ctypes callback per record.

BCC hands each record to Python through a ctypes callback: taking the GIL,
building the arguments and the callback frame cost more than decoding the
record (about a sixth of the loader's CPU per connection event under a
connect flood, docs/benchmarks.md §3). Here the records are sliced out of
the mapping in a plain loop.

The layout (kernel/bpf/ringbuf.c): page 0, read-write, holds the consumer
position; page 1, read-only, the producer position; the data area follows,
mapped twice in a row so a record that wraps reads as one slice. Each
record starts with an 8-byte header: its length (bit 31: not committed
yet, bit 30: discarded) and a page offset; records are 8-byte aligned.

Ordering: the producer position and a record's length are read before the
record, and the consumer position written after it. On x86-64 (TSO) plain
loads are not reordered with other loads nor stores with earlier loads, so
these are the acquire/release libbpf uses; elsewhere available() says no
and the caller keeps BCC's callback."""

from __future__ import annotations

import mmap
import platform
import struct
from typing import Callable

BUSY_BIT = 1 << 31
DISCARD_BIT = 1 << 30
HDR_SZ = 8
_U64 = struct.Struct("<Q")
_U32 = struct.Struct("<I")


def available() -> str | None:
    """None when this reader may be used here, else why not."""
    machine = platform.machine()
    if machine not in ("x86_64", "AMD64"):
        return f"{machine} is not x86-64: ring buffer read through BCC's callback"
    return None


class RingReader:
    """One BPF_MAP_TYPE_RINGBUF map, consumed in place. fileno() is the map's
    fd: poll it for POLLIN (data is there)."""

    def __init__(self, map_fd: int, size: int):
        if size <= 0 or size & (size - 1):
            raise ValueError(f"a ring buffer's size is a power of two, not {size}")
        self.fd = map_fd
        self.size = size
        self.mask = size - 1
        page = mmap.PAGESIZE
        self._cons = mmap.mmap(map_fd, page, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE, offset=0)
        try:
            self._prod = mmap.mmap(map_fd, page + 2 * size, mmap.MAP_SHARED, mmap.PROT_READ, offset=page)
        except BaseException:
            self._cons.close()
            raise
        self._data = memoryview(self._prod)[page:]
        self._page = page

    def fileno(self) -> int:
        return self.fd

    def pending(self) -> bool:
        return _U64.unpack_from(self._prod, 0)[0] != _U64.unpack_from(self._cons, 0)[0]

    def consume(self, handle: Callable[[bytes], None], budget: int) -> int:
        """Hand at most `budget` committed records (as bytes) to handle();
        returns how many. The consumer position moves past each record
        before the next is handled, so an exception from handle() loses
        nothing but that record."""
        cons = _U64.unpack_from(self._cons, 0)[0]
        prod = _U64.unpack_from(self._prod, 0)[0]
        data, mask, done = self._data, self.mask, 0
        while cons < prod and done < budget:
            at = cons & mask
            length = _U32.unpack_from(data, at)[0]
            if length & BUSY_BIT:   # reserved, not committed yet: the rest waits
                break
            n = length & ~(BUSY_BIT | DISCARD_BIT)
            rec_at = at + HDR_SZ
            cons += (n + HDR_SZ + 7) & ~7
            if not length & DISCARD_BIT:
                record = bytes(data[rec_at:rec_at + n])
                _U64.pack_into(self._cons, 0, cons)
                done += 1
                handle(record)
            else:
                _U64.pack_into(self._cons, 0, cons)
            if cons >= prod:   # caught up with what we saw: look again
                prod = _U64.unpack_from(self._prod, 0)[0]
        return done

    def close(self) -> None:
        self._data.release()
        self._prod.close()
        self._cons.close()
