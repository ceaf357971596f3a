"""Counting the writes to a command file, to detect the ones nobody read.

`echo '[...]' > records/ban_commands.json` truncates and rewrites the file in
place, without any lock; when a second such write comes before the loader has
read the first, the first is gone. That cannot be prevented for a plain file
people write with `>`, so it is detected: inotify reports every write
session that ends (IN_CLOSE_WRITE: one `>` or `>>`) and every file renamed
onto the name (IN_MOVED_TO: a tool's atomic replace under the lock, an
editor's save). Each session adds at least one command; CommandQueue counts
the commands that appear between two looks. Sessions minus new commands
(minus the loader's own rewrites) is the number of writes lost. Sessions are
counted before each read, so a write that lands during the read can only
make the count low for a moment, and a session writing several commands
makes it low for good: what is reported was lost, and perhaps more was.
"""

from __future__ import annotations

import ctypes
import os
import struct

IN_MODIFY = 0x00000002
IN_CLOSE_WRITE = 0x00000008
IN_OPEN = 0x00000020
IN_MOVED_TO = 0x00000080
IN_Q_OVERFLOW = 0x00004000
IN_NONBLOCK = os.O_NONBLOCK
IN_CLOEXEC = os.O_CLOEXEC
_EVENT = struct.Struct("iIII")
# inotify merges an event into the one before it when both are identical, so
# two sessions' IN_CLOSE_WRITE in a row would count once. Watching IN_OPEN and
# IN_MODIFY as well puts other events between them (open, write, close).
WATCH_MASK = IN_OPEN | IN_MODIFY | IN_CLOSE_WRITE | IN_MOVED_TO


class WriteCounter:
    """Write sessions ended on one file name, counted from a directory watch."""

    def __init__(self, directory: str | os.PathLike, name: str):
        self.fd = -1
        self.name = os.fsencode(name)
        self.sessions = 0
        self.overflowed = False
        libc = ctypes.CDLL(None, use_errno=True)
        fd = libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1 failed")
        if libc.inotify_add_watch(fd, os.fsencode(str(directory)), WATCH_MASK) < 0:
            err = ctypes.get_errno()
            os.close(fd)
            raise OSError(err, f"inotify_add_watch {directory} failed")
        self.fd = fd

    def drain(self) -> int:
        """Read what the kernel has queued; returns the session count so far."""
        while True:
            try:
                buf = os.read(self.fd, 1 << 16)
            except BlockingIOError:
                return self.sessions
            i = 0
            while i + _EVENT.size <= len(buf):
                _wd, mask, _cookie, length = _EVENT.unpack_from(buf, i)
                name = buf[i + _EVENT.size:i + _EVENT.size + length].rstrip(b"\0")
                i += _EVENT.size + length
                if mask & IN_Q_OVERFLOW:
                    self.overflowed = True  # counts are low from here on: say so
                elif name == self.name and mask & (IN_CLOSE_WRITE | IN_MOVED_TO):
                    self.sessions += 1

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    # inotify instances are limited per user (128 by default): give ours back
    # as soon as its queue is gone.
    __del__ = close
