"""Counting the writes to a command file, to detect the ones nobody read
(the fallback: where fanotify permission events are available, loader/cmdfan.py
lets one writer in at a time and nothing is lost).

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

Measured with 50 shells each writing 200 commands with `>` at once
(tests/test_cmdqueue.py, tests/test_kernel_records.py): 99.8-99.97% of the
commands applied or reported (it was 94-99% with one watch drained by the
loop); the rest are closes that raced on two CPUs (see WATCH_MASK).

Preventing the loss instead, with a read lease on the file (F_SETLEASE: a
writer's open waits until the loader has read and let go), was measured and
not used: a lease break lets every waiting writer go at once, and no lease
can be taken again while any of them has the file open, so concurrent `>`
writers still replace each other; it would only make writers wait, up to
/proc/sys/fs/lease-break-time (45 s) behind a stopped loader.
"""

from __future__ import annotations

import ctypes
import os
import select
import stat
import struct
import threading

from . import wake

IN_MODIFY = 0x00000002
IN_CLOSE_WRITE = 0x00000008
IN_OPEN = 0x00000020
IN_MOVED_FROM = 0x00000040
IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
IN_DELETE = 0x00000200
IN_IGNORED = 0x00008000
IN_Q_OVERFLOW = 0x00004000
IN_DONT_FOLLOW = 0x02000000
IN_NONBLOCK = os.O_NONBLOCK
IN_CLOEXEC = os.O_CLOEXEC
_EVENT = struct.Struct("iIII")
# inotify merges an event into the last one queued when both are identical
# (mask, watch, name), so two sessions' IN_CLOSE_WRITE in a row would count
# once: 50 shells writing at once lost about 1.5% of their sessions that way.
# So the file is watched twice in one instance, through its directory (which
# sees renames onto the name) and through its inode (re-watched after each
# replacement; one set aside stops counting). Each close then queues two
# events on two watches, and two sessions' closes interleave as dir, file, dir, file: neighbours always
# differ. Only two closes racing on two CPUs inside the same few instructions
# can still merge on both watches; IN_OPEN and IN_MODIFY put other events
# between them as well, and a thread empties the queue as soon as anything
# arrives (see _Follower).
WATCH_MASK = (IN_OPEN | IN_MODIFY | IN_CLOSE_WRITE | IN_MOVED_TO | IN_CREATE | IN_MOVED_FROM
              | IN_DELETE)
FILE_MASK = IN_OPEN | IN_MODIFY | IN_CLOSE_WRITE | IN_DONT_FOLLOW


class _Follower:
    """The inotify instance and its count, read by a thread of its own the
    moment events arrive: the loop may be busy for seconds applying a big
    list, and every event left queued meanwhile is one a later identical
    event can merge into. Holds no reference to the WriteCounter, so the
    counter is freed (and the thread told to stop) when its queue is."""

    def __init__(self, directory: str | os.PathLike, name: str):
        self.name = os.fsencode(name)
        self.path = os.path.join(os.fsencode(str(directory)), self.name)
        # Sessions seen through each watch; renames onto the name (directory only).
        self.dir_closes = self.file_closes = self.renames = 0
        self.overflowed = False
        self.lock = threading.Lock()
        self.libc = ctypes.CDLL(None, use_errno=True)
        fd = self.libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1 failed")
        self.dir_wd = self.libc.inotify_add_watch(fd, os.fsencode(str(directory)), WATCH_MASK)
        if self.dir_wd < 0:
            err = ctypes.get_errno()
            os.close(fd)
            raise OSError(err, f"inotify_add_watch {directory} failed")
        self.fd = fd
        # The inode at the name, and those a rename replaced while a writer may
        # still have them open (its close is a session too); the kernel drops
        # a watch (IN_IGNORED) when its inode is freed.
        self.file_wd, self.file_wds = -1, set()
        self._watch_file()
        self.stop_r, self.stop_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)

    def _watch_file(self) -> None:
        """Watch the regular file at the name now as well (none there: the
        directory's IN_CREATE or IN_MOVED_TO calls this again). Only a
        regular file: a directory's own events would count high."""
        try:
            regular = stat.S_ISREG(os.lstat(self.path).st_mode)
        except OSError:
            regular = False
        self.file_wd = self.libc.inotify_add_watch(self.fd, self.path, FILE_MASK) if regular else -1
        if self.file_wd >= 0:
            self.file_wds.add(self.file_wd)

    def _unwatch_file(self) -> None:
        """The file at the name was moved away (set aside) or deleted."""
        if self.file_wd >= 0:
            self.libc.inotify_rm_watch(self.fd, self.file_wd)
            self.file_wds.discard(self.file_wd)
            self.file_wd = -1

    @property
    def sessions(self) -> int:
        # Each watch counts low, never high, so the larger count is the better one.
        return self.renames + max(self.dir_closes, self.file_closes)

    def follow(self) -> None:
        wake.control_thread()
        poller = select.poll()
        poller.register(self.fd, select.POLLIN)
        poller.register(self.stop_r, select.POLLIN)
        try:
            seen = self.sessions
            while not any(fd == self.stop_r for fd, _ in poller.poll()):
                if self.drain() != seen:   # a write session on our file ended (not any name's)
                    seen = self.sessions
                    wake.poke()   # the enforcement loop reads the file now (loader/wake.py)
        finally:
            with self.lock:
                for fd in (self.fd, self.stop_r, self.stop_w):
                    os.close(fd)
                self.fd = -1

    def drain(self) -> int:
        with self.lock:
            while self.fd >= 0:
                try:
                    buf = os.read(self.fd, 1 << 16)
                except BlockingIOError:
                    break
                self._count(buf)
            return self.sessions

    def _count(self, buf: bytes) -> None:
        i, rewatch = 0, False
        while i + _EVENT.size <= len(buf):
            wd, mask, _cookie, length = _EVENT.unpack_from(buf, i)
            name = buf[i + _EVENT.size:i + _EVENT.size + length].rstrip(b"\0")
            i += _EVENT.size + length
            if mask & IN_Q_OVERFLOW:
                self.overflowed = True  # counts are low from here on: say so
            elif wd != self.dir_wd:
                self.file_closes += bool(wd in self.file_wds and mask & IN_CLOSE_WRITE)
                if mask & IN_IGNORED:
                    self.file_wds.discard(wd)
            elif name == self.name:
                self.dir_closes += bool(mask & IN_CLOSE_WRITE)
                self.renames += bool(mask & IN_MOVED_TO)
                if mask & (IN_MOVED_FROM | IN_DELETE):
                    self._unwatch_file()
                rewatch |= bool(mask & (IN_MOVED_TO | IN_CREATE))
        if rewatch:
            self._watch_file()

    def stop(self) -> None:
        with self.lock:
            if self.fd >= 0:
                os.write(self.stop_w, b"x")


class WriteCounter:
    """Write sessions ended on one file name, counted from a directory watch
    and a watch on the file itself."""

    def __init__(self, directory: str | os.PathLike, name: str):
        self._f: _Follower | None = None
        f = _Follower(directory, name)
        threading.Thread(target=f.follow, name=f"cmdwatch {name}", daemon=True).start()
        self._f = f

    def take_overflow(self) -> bool:
        """Did the kernel drop events since the last call? (then counts are low)"""
        with self._f.lock:
            was, self._f.overflowed = self._f.overflowed, False
        return was

    def drain(self) -> int:
        """Take what the kernel has queued; returns the session count so far."""
        return self._f.drain()

    def close(self) -> None:
        if self._f is not None:
            self._f.stop()

    # inotify instances are limited per user (128 by default): give ours back
    # as soon as its queue is gone.
    __del__ = close
