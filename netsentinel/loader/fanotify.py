"""fanotify(7) through ctypes: a content-class group marking one directory's
children, its events, and the answer to a permission event (loader/cmdfan.py).
Needs CAP_SYS_ADMIN and CONFIG_FANOTIFY_ACCESS_PERMISSIONS."""

from __future__ import annotations

import ctypes
import os
import struct

FAN_CLOEXEC, FAN_NONBLOCK, FAN_CLASS_CONTENT, FAN_UNLIMITED_QUEUE = 0x1, 0x2, 0x4, 0x10
FAN_MARK_ADD, FAN_MARK_ONLYDIR = 0x1, 0x8
FAN_CLOSE_WRITE, FAN_CLOSE_NOWRITE = 0x8, 0x10
FAN_OPEN_PERM, FAN_EVENT_ON_CHILD = 0x10000, 0x08000000
FAN_ALLOW = 0x1
AT_FDCWD = -100
_META = struct.Struct("IBBHQii")  # struct fanotify_event_metadata
_RESPONSE = struct.Struct("iI")   # struct fanotify_response


def open_group(directory: str, mask: int) -> int:
    """A group (non-blocking, close-on-exec) whose event descriptors are
    opened read-write, marking directory's children with mask. The queue has
    no limit: with one, the kernel drops a permission event on overflow and
    lets that open through unanswered."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.fanotify_mark.argtypes = [ctypes.c_int, ctypes.c_uint, ctypes.c_uint64, ctypes.c_int,
                                   ctypes.c_char_p]
    fd = libc.fanotify_init(FAN_CLASS_CONTENT | FAN_CLOEXEC | FAN_NONBLOCK | FAN_UNLIMITED_QUEUE,
                            os.O_RDWR | os.O_LARGEFILE | os.O_CLOEXEC)
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"fanotify_init: {os.strerror(err)}")
    if libc.fanotify_mark(fd, FAN_MARK_ADD | FAN_MARK_ONLYDIR, mask | FAN_EVENT_ON_CHILD,
                          AT_FDCWD, os.fsencode(directory)) < 0:
        err = ctypes.get_errno()
        os.close(fd)
        raise OSError(err, f"fanotify_mark {directory}: {os.strerror(err)}")
    return fd


def read_events(group: int) -> list[tuple[int, int, int]]:
    """(mask, event fd, pid) of every event queued now; [] when none. Each
    event fd is ours to close (and a permission event's to answer first)."""
    events = []
    while True:
        try:
            buf = os.read(group, 1 << 16)
        except BlockingIOError:
            return events
        i = 0
        while i + _META.size <= len(buf):
            length, _vers, _res, _mlen, mask, fd, pid = _META.unpack_from(buf, i)
            events.append((mask, fd, pid))
            i += length


def allow(group: int, fd: int) -> None:
    os.write(group, _RESPONSE.pack(fd, FAN_ALLOW))
