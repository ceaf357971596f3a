"""Raw batch reads of a BPF hash map: one syscall per batch into buffers
allocated once, and only the fields a caller names unpacked, in C
(struct.iter_unpack).

BCC's items_lookup_batch allocates arrays the map's size on every call and
makes a ctypes object per entry; under a connect flood the stack's
closed-connection map holds thousands of entries every interval and that
was most of the loader's CPU (docs/benchmarks.md §3). A caller here picks
the few entries it reports and copies only those whole (leaf())."""

from __future__ import annotations

import ctypes as ct
import errno
import os
import struct
from typing import Iterator

_CODES = {1: "B", 2: "H", 4: "I", 8: "Q"}


def _layout(ctype, names: tuple[str, ...]) -> tuple[struct.Struct, tuple[str, ...]]:
    """A struct.Struct reading `names` (unsigned integer fields of the ctypes
    structure) in offset order, the rest skipped; and that order."""
    fields = []
    for name in names:
        desc = getattr(ctype, name)
        ftype = dict(ctype._fields_)[name]
        size = ct.sizeof(ftype)
        if size not in _CODES or desc.size != size:   # bit fields and arrays are not for this
            raise ValueError(f"{ctype.__name__}.{name}: not a plain integer field")
        fields.append((desc.offset, size, name))
    fields.sort()
    fmt, at = "=", 0
    for off, size, _ in fields:
        if off > at:
            fmt += f"{off - at}x"
        fmt += _CODES[size]
        at = off + size
    total = ct.sizeof(ctype)
    if total > at:
        fmt += f"{total - at}x"
    return struct.Struct(fmt), tuple(n for _, _, n in fields)


class BatchReader:
    """Reads a BCC hash table in batches. After read(), keys() and values()
    yield the chosen fields of each entry read (as tuples, in the order of
    key_names / value_names after sorting by offset: see .key_order and
    .value_order), and leaf(i) / leaf_bytes(i) give entry i whole."""

    def __init__(self, table, value_names: tuple[str, ...], key_names: tuple[str, ...] = ()):
        from bcc.libbcc import lib   # kernel/ is where bcc is imported, when a map exists
        self._lib = lib
        self.fd = table.map_fd
        self.Key, self.Leaf = table.Key, table.Leaf
        self.kz, self.vz = ct.sizeof(self.Key), ct.sizeof(self.Leaf)
        self.cap = int(table.max_entries)
        self._keys = ct.create_string_buffer(self.kz * self.cap)
        self._vals = ct.create_string_buffer(self.vz * self.cap)
        self.n = 0
        self._vs, self.value_order = _layout(self.Leaf, value_names)
        if hasattr(self.Key, "_fields_"):
            self._ks, self.key_order = _layout(self.Key, key_names)
        else:   # a plain integer key (BPF_HASH(name, u64, ...)): the key itself
            self._ks, self.key_order = struct.Struct("=" + _CODES[self.kz]), ()

    def read(self, delete: bool) -> int:
        """Every entry (deleted too when delete: the kernel's batch
        lookup-and-delete holds each bucket's lock, so no update is lost);
        returns how many were read."""
        fn = self._lib.bpf_lookup_and_delete_batch if delete else self._lib.bpf_lookup_batch
        token_in, token_out, count = ct.c_uint32(0), ct.c_uint32(0), ct.c_uint32(0)
        total = 0
        while total < self.cap:
            count.value = self.cap - total
            res = fn(self.fd, ct.byref(token_in) if total else None, ct.byref(token_out),
                     ct.byref(self._keys, self.kz * total), ct.byref(self._vals, self.vz * total),
                     ct.byref(count))
            err = ct.get_errno()
            total += count.value
            if res != 0:
                if err == errno.ENOENT:   # the end of the map
                    break
                if err == errno.ENOSPC and total:   # a bucket bigger than the room left: what we have
                    break
                raise OSError(err, f"BPF map batch read failed: {os.strerror(err)}")
            if count.value == 0:   # no progress (a concurrent update): what we have
                break
            token_in.value = token_out.value
        self.n = total
        return total

    def values(self) -> Iterator[tuple]:
        return self._vs.iter_unpack(memoryview(self._vals)[:self.n * self.vz])

    def keys(self) -> Iterator[tuple]:
        return self._ks.iter_unpack(memoryview(self._keys)[:self.n * self.kz])

    def leaf_bytes(self, i: int) -> bytes:
        """Entry i's value as bytes (outlives the next read)."""
        return bytes(memoryview(self._vals)[i * self.vz:(i + 1) * self.vz])

    def leaf(self, i: int):
        return self.Leaf.from_buffer_copy(self._vals, i * self.vz)

    def key(self, i: int):
        return self.Key.from_buffer_copy(self._keys, i * self.kz)
