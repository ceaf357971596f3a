"""One writer at a time on each command file, with fanotify permission events.

`echo '[...]' > records/ban_commands.json` truncates the file and writes it
in place; a second `>` before the loader has read the first wipes it. So the
loader answers every open of a command file itself (FAN_OPEN_PERM on a mark
on records/, FAN_EVENT_ON_CHILD, so a file renamed onto the name is covered
too) and lets one writer session in at a time: a second opener gets no
answer, so its open() waits, until the first session's last close. At that
close the responder reads, through the close event's own descriptor (opened
FMODE_NONOTIFY: it makes no event), exactly what that writer left, stores it
as one file in the drop directory (ban_commands.d/, consumed exactly once,
in order, by CommandQueue), leaves `[]` in the file, and only then answers
the next opener. At an open that starts a session it does the same first, so
what a tool renamed onto the name is stored before a `>` can truncate it.
The command file is thus a mailbox emptied at each session's end, and its
commands live in exactly one place at a time: nothing is read twice or lost.

- The loader's own opens (its pid) are answered at once; the responder
  never opens a command file itself (its own open would wait on itself).
- Opens of other files, and further opens by the session's own process,
  are answered at once.
- Nothing waits for ever: the kernel answers "allow" for every pending
  open when the fanotify descriptor closes (the loader exits or is killed);
  a session still open after BOUND_S (an editor, `tail -f`, a reader
  holding the file) stops counting as one: the next opener goes in, and a
  write that session makes later is stored if no other session is open,
  otherwise reported as possibly lost. A writer therefore waits for the
  sessions queued ahead of it, each at most BOUND_S (about a millisecond
  each for `echo >`), and never longer while the loader is gone.
- An open the kernel cannot give us a descriptor for (we are out of them)
  is refused by the kernel: that writer's open fails (EPERM), so it knows.
- The price: every open of any file in records/ is answered by this thread,
  so while the loader is stopped (SIGSTOP, a debugger) such opens wait until
  it runs again or dies.
"""

from __future__ import annotations

import contextlib
import os
import threading
import weakref

from .. import dropdir, fsguard, jsonsafe
from . import cmdsessions
from .cmdsessions import Sessions, _Slot


class Responder:
    """The records directory's command files, one writer session at a time."""

    def __init__(self, root: str):
        self._core = core = Sessions(root)
        self._closed = False
        threading.Thread(target=core.follow, name="cmdfan", daemon=True).start()

    def track(self, name: str) -> None:
        dropdir.ensure(self._core.root, name)
        with self._core.lock:
            self._core.slots.setdefault(name, _Slot(name))

    def alive(self) -> bool:
        return self._core.fd >= 0

    def sweep(self, name: str) -> None:
        """Store what is in the command file now (a tool renamed it there),
        unless a session is open (its close stores it). Raises
        fsguard.UnsafePath for a file to set aside."""
        path = f"{self._core.root}/{name}"
        try:  # opened before taking the lock: the thread answers our own open
            fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except FileNotFoundError:
            return
        except OSError as e:
            raise fsguard.UnsafePath(f"cannot read {path}: {e.strerror}; remove it") from None
        try:
            st = os.fstat(fd)
            fsguard.check_file(st, path)
            if st.st_size > jsonsafe.MAX_BYTES:
                raise fsguard.UnsafePath(f"{path} is {st.st_size} bytes, more than the "
                                         f"{jsonsafe.MAX_BYTES} allowed")
            with self._core.lock:
                if self._core.slots[name].holder is None:
                    self._core.store(self._core.slots[name], fd, None)
        finally:
            os.close(fd)

    def take_notes(self, name: str) -> list[tuple[dict, str]]:
        with self._core.lock:
            mine = [(what, why) for n, what, why in self._core.notes if n == name]
            self._core.notes = [n for n in self._core.notes if n[0] != name]
        return mine

    def status(self) -> dict:
        with self._core.lock:
            return {"serialised": self.alive(), "bound_s": cmdsessions.BOUND_S, **self._core.counts,
                    "waiting": sum(len(s.waiters) for s in self._core.slots.values()),
                    "failed": self._core.failed}

    def close(self) -> None:
        """Stop the thread. Takes no lock: at interpreter exit a daemon
        thread may have ended holding one."""
        if getattr(self, "_closed", True):
            return
        self._closed = True
        with contextlib.suppress(OSError):  # the thread already gone
            os.write(self._core.stop_w, b"x")
        os.close(self._core.stop_w)

    __del__ = close


_shared: weakref.WeakValueDictionary = weakref.WeakValueDictionary()
_shared_lock = threading.Lock()
unavailable: str | None = None  # why writers are not serialised (said once by the loader)


def attach(root, name: str) -> Responder | None:
    """The responder for root's command files, tracking name (None: fanotify
    is unavailable here, not root or not in this kernel; see `unavailable`)."""
    global unavailable
    real = os.path.realpath(root)
    with _shared_lock:
        r = _shared.get(real)
        if r is None or not r.alive():
            try:
                r = Responder(real)
            except OSError as e:
                unavailable = f"fanotify unavailable ({e.strerror or e})"
                return None
            _shared[real] = r
    r.track(name)
    return r


def status(root) -> dict | None:
    r = _shared.get(os.path.realpath(root))
    return r.status() if r is not None else None
