"""The sessions on the command files, served by cmdfan's thread: who is
let in, who waits, and what each session left (see loader/cmdfan.py)."""

from __future__ import annotations

import collections
import contextlib
import os
import resource
import select
import stat
import threading
import time

from .. import dropdir, fsguard, jsonsafe
from . import fanotify, wake
from .fanotify import FAN_CLOSE_NOWRITE, FAN_CLOSE_WRITE, FAN_OPEN_PERM
from ..records import LOCK_NAME

BOUND_S = 2.0  # longest one session holds the others back
EMPTY = b"[]\n"


class _Slot:
    """One command file's sessions."""

    def __init__(self, name: str):
        self.name = name
        self.holder: int | None = None           # pid of the session in progress
        self.since = 0.0
        self.opens: collections.Counter = collections.Counter()  # (dev, ino) -> its open count
        self.waiters: collections.deque = collections.deque()   # (event fd, pid), unanswered
        self.demoted: dict[int, collections.Counter] = {}       # pid -> opens, past BOUND_S


def _key(fd: int) -> tuple[int, int]:
    st = os.fstat(fd)
    return st.st_dev, st.st_ino


class Sessions:
    """The fanotify descriptor and the sessions, served by a thread of its
    own; holds no reference to the Responder (freed when its queues are)."""

    def __init__(self, root: str):
        self.root = root
        self.fd = fanotify.open_group(root, FAN_OPEN_PERM | FAN_CLOSE_WRITE | FAN_CLOSE_NOWRITE)
        self.lock = threading.RLock()  # the slots; never held while waiting for an answer
        self.slots: dict[str, _Slot] = {}
        self.notes: list[tuple[str, dict, str]] = []  # (name, what, why) for the loop to record
        self.counts = {"sessions": 0, "stored": 0, "held_too_long": 0}
        self.failed: str | None = None
        self.stop_r, self.stop_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        # Each waiting opener holds a descriptor here: allow as many as we may.
        _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    # ------------------------------------------------------------ the thread
    def follow(self) -> None:
        wake.control_thread()   # every writer of records/ waits on this thread
        poller = select.poll()
        poller.register(self.fd, select.POLLIN)
        poller.register(self.stop_r, select.POLLIN)
        try:
            while True:
                ready = poller.poll(self._timeout_ms())
                if any(fd == self.stop_r for fd, _ in ready):
                    break
                with wake.GATE.held():   # writers wait on us: the event thread steps aside
                    self._read_events()
                    self._expire()
        except Exception as e:  # never leave openers waiting on a dead thread
            self.failed = f"{type(e).__name__}: {e}"
        finally:
            with self.lock:
                os.close(self.fd)  # the kernel allows every open still waiting
                self.fd = -1
                for slot in self.slots.values():
                    for wfd, _ in slot.waiters:
                        os.close(wfd)
                    slot.waiters.clear()
                os.close(self.stop_r)  # (stop_w is close()'s)

    def _timeout_ms(self) -> int:
        since = [s.since for s in self.slots.values() if s.holder is not None]
        if not since:
            return -1
        return max(0, int((min(since) + BOUND_S - time.monotonic()) * 1000) + 1)

    def _read_events(self) -> None:
        for mask, fd, pid in fanotify.read_events(self.fd):
            kept = False
            try:
                kept = self._event(mask, fd, pid)
            except Exception as e:
                self.failed = f"{type(e).__name__}: {e}"  # reported; the opener goes on
            finally:
                if fd >= 0 and not kept:
                    self._answer(fd, mask)

    def _answer(self, fd: int, mask: int = FAN_OPEN_PERM) -> None:
        try:
            if mask & FAN_OPEN_PERM:
                fanotify.allow(self.fd, fd)
        except OSError as e:  # (an event no longer pending: nobody waits on it)
            self.failed = f"answering an open: {e}"
        finally:
            os.close(fd)

    def _event(self, mask: int, fd: int, pid: int) -> bool:
        """Returns True when fd was kept (an opener left waiting)."""
        if fd < 0 or pid == os.getpid():
            return False  # our own opens: at once (the finally above answers)
        if mask & FAN_OPEN_PERM:
            name = self._name_of(fd)
            if name is None:
                return False
            with self.lock:
                slot = self.slots[name]
                # (pid 0: an opener outside our pid namespace; never "the same process")
                if slot.holder is not None and (slot.holder != pid or not pid):
                    slot.waiters.append((fd, pid))
                    return True
                self._grant(slot, fd, pid)
                return True  # answered by _grant
        with self.lock:
            self._close(fd, pid, mask)
        return False

    def _name_of(self, fd: int) -> str | None:
        """The command file fd is open on (None: another file)."""
        return self._slot_of(self._path_of(fd))

    @staticmethod
    def _path_of(fd: int) -> str | None:
        try:
            p = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            return None
        return p.removesuffix(" (deleted)")  # replaced by a rename after it was opened

    def _slot_of(self, path: str | None) -> str | None:
        d, _, base = (path or "").rpartition("/")
        return base if d == self.root and base in self.slots else None

    # ------------------------------------------------------------ sessions (under self.lock)
    def _grant(self, slot: _Slot, fd: int, pid: int) -> None:
        """Let an opener in; whatever fails, it is answered."""
        try:
            slot.opens[_key(fd)] += 1
            if slot.holder is None:
                slot.holder, slot.since = pid, time.monotonic()
                self.counts["sessions"] += 1
                self.store(slot, fd, pid)  # what a rename left, before this open can truncate it
        except Exception as e:  # a full disk: the content stays in the file for the next look
            self.failed = f"storing {slot.name}: {e}"
        finally:
            self._answer(fd)

    def _close(self, fd: int, pid: int, mask: int) -> None:
        key = _key(fd)
        for slot in self.slots.values():
            if key in slot.opens and (pid == slot.holder or
                                      not any(key in d for d in slot.demoted.values())):
                slot.opens[key] -= 1  # (a holder's child may close what it inherited)
                if slot.opens[key] <= 0:
                    del slot.opens[key]
                if not slot.opens:
                    try:
                        self.store(slot, fd, slot.holder)  # exactly what this session left
                    except Exception as e:
                        self.failed = f"storing {slot.name}: {e}"
                    finally:
                        slot.holder = None
                        self._next(slot)
                return
            if pid in slot.demoted and key in slot.demoted[pid]:
                slot.demoted[pid][key] -= 1
                if slot.demoted[pid][key] <= 0:
                    del slot.demoted[pid][key]
                    if not slot.demoted[pid]:
                        del slot.demoted[pid]
                return self._late(slot, fd, pid, mask, key)
        # A close we never let in: a file a tool wrote and renamed onto the
        # name, or one opened before we watched.
        path = self._path_of(fd)
        name = self._slot_of(path)
        if name is not None:
            self._late(self.slots[name], fd, pid, mask, key)
        elif path == f"{self.root}/{LOCK_NAME}":
            # A writer let go of the records lock. What it did under it may be
            # a command file renamed into place (RecordsStore.append_command),
            # which makes no event of its own: the loop looks now, not at its poll.
            wake.nudge()

    def _late(self, slot: _Slot, fd: int, pid: int, mask: int, key: tuple) -> None:
        """A write outside the sessions ended: store it, unless the session
        open now has the same file open (the two may be mixed, or one wiped)."""
        if not mask & FAN_CLOSE_WRITE:
            return
        if key not in slot.opens:
            self.store(slot, fd, pid)
        else:
            self.notes.append((slot.name, {"file": slot.name, "pid": pid, "lost_writes": 1},
                               f"pid {pid} wrote to {slot.name} while another writer had it open "
                               f"(it kept the file open over {BOUND_S:g} s), so its commands may "
                               f"be lost; append with >> or queue in "
                               f"{dropdir.drop_dir_name(slot.name)}/"))

    def _next(self, slot: _Slot) -> None:
        """Let the next opener in (and any other open by the same process)."""
        if slot.waiters:
            fd, pid = slot.waiters.popleft()
            self._grant(slot, fd, pid)
            for w in [w for w in slot.waiters if w[1] == pid and pid]:
                slot.waiters.remove(w)
                self._grant(slot, *w)

    def _expire(self) -> None:
        now = time.monotonic()
        if not any(s.holder is not None and now - s.since > BOUND_S for s in self.slots.values()):
            return
        self._read_events()  # a close already queued ends the session the normal way
        with self.lock:
            for slot in self.slots.values():
                if slot.holder is not None and now - slot.since > BOUND_S:
                    slot.demoted.setdefault(slot.holder, collections.Counter()).update(slot.opens)
                    slot.opens, slot.holder = collections.Counter(), None
                    self.counts["held_too_long"] += 1
                    self._next(slot)

    def store(self, slot: _Slot, fd: int, pid: int | None) -> None:
        """Move the file's content into the drop directory, then leave `[]` in it."""
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size == 0:
            return
        try:
            fsguard.check_file(st, f"{self.root}/{slot.name}")
        except fsguard.UnsafePath:
            return  # the loop sets such a file aside, with the reason
        want, chunks = min(st.st_size, jsonsafe.MAX_BYTES) + 1, []
        while want > 0:  # over MAX_BYTES: stored cut, so the drop directory refuses it
            b = os.pread(fd, want, sum(map(len, chunks)))
            if not b:
                break
            chunks.append(b)
            want -= len(b)
        data = b"".join(chunks)
        if data.strip() == EMPTY.strip():
            return
        if data.strip():
            dropdir.submit_bytes(self.root, dropdir.drop_dir_name(slot.name), data,
                                 slot.name + (f"-pid{pid}" if pid else ""))
            self.counts["stored"] += 1
            wake.poke()
        os.ftruncate(fd, 0)
        os.pwrite(fd, EMPTY, 0)  # what the store writes for "no commands"
