"""The records/ locks (RecordsStore's lock half).

- records/.lock: one advisory flock shared by every writer of the directory,
  re-entrant within a process (every RecordsStore over one directory shares
  its state, so nesting two re-enters instead of deadlocking), taken with a
  timeout. flock is released by the kernel when a process dies, so a
  crashed writer never leaves a stale lock behind.
- records/.loader.lock: held by the one loader of a directory for its life.
Both are root 0600 (fsguard.open_lock): flock works on a read-only
descriptor, so a lock file another user can open lets them stall every
writer. A process that cannot open it (not root) queues commands in the drop
directories instead.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
import time
from pathlib import Path
from typing import Callable, Iterator

from . import fsguard
from .errors import NetSentinelError
from .records import LOADER_LOCK_NAME, LOCK_NAME


class StoreError(NetSentinelError):
    """A records/ operation that could not be done; the message is one line."""


class LockTimeout(StoreError):
    pass


class CorruptFile(StoreError):
    """Raised only by read(..., on_corrupt='raise')."""


class _DirLock:
    """The lock state of one directory in this process. Every RecordsStore
    over that directory shares it, so nesting two of them (threats.reject
    holding records/ while editing a filter_config.json kept in records/)
    re-enters instead of deadlocking on its own flock."""

    def __init__(self) -> None:
        self.tlock = threading.RLock()
        self.depth = 0
        self.fd: int | None = None


_DIR_LOCKS: dict[str, _DirLock] = {}
_DIR_LOCKS_GUARD = threading.Lock()


def _dir_lock(root: Path) -> _DirLock:
    with _DIR_LOCKS_GUARD:
        return _DIR_LOCKS.setdefault(os.path.realpath(root), _DirLock())


class RecordsLock:
    """Mixin: needs root, lock_timeout, warn and _shared (a _DirLock)."""

    root: Path
    lock_timeout: float
    warn: Callable[[str], None]
    _shared: _DirLock

    # ------------------------------------------------------------------ lock
    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the store-wide lock (re-entrant within this process)."""
        shared = self._shared
        if not shared.tlock.acquire(timeout=self.lock_timeout):
            raise LockTimeout(f"timed out after {self.lock_timeout:g}s waiting for "
                              f"{self.root / LOCK_NAME} (held by another thread)")
        try:
            if shared.depth == 0:
                shared.fd = self._acquire()
            shared.depth += 1
            try:
                yield
            finally:
                shared.depth -= 1
                if shared.depth == 0 and shared.fd is not None:
                    fcntl.flock(shared.fd, fcntl.LOCK_UN)
                    os.close(shared.fd)
                    shared.fd = None
        finally:
            shared.tlock.release()

    def _acquire(self) -> int:
        lock_path = self.root / LOCK_NAME
        try:
            fd, repaired = fsguard.open_lock(lock_path)
        except fsguard.UnsafePath as e:
            raise StoreError(str(e)) from None
        except OSError as e:
            raise StoreError(f"cannot open lock file {lock_path}: {e.strerror}") from e
        if repaired:
            self.warn(repaired)
        deadline = time.monotonic() + self.lock_timeout
        delay = 0.001
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return fd
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    os.close(fd)
                    raise LockTimeout(
                        f"timed out after {self.lock_timeout:g}s waiting for {lock_path}")
                time.sleep(delay)
                delay = min(delay * 2, 0.02)

    def hold_loader_lock(self) -> int:
        """Take records/.loader.lock for the caller's lifetime (the kernel
        drops it when the process dies); a second loader on the same
        directory is refused at once with the first one's pid."""
        path = self.root / LOADER_LOCK_NAME
        try:
            fd, repaired = fsguard.open_lock(path)
        except fsguard.UnsafePath as e:
            raise StoreError(str(e)) from None
        if repaired:
            self.warn(repaired)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "?"
            os.close(fd)
            raise StoreError(f"another loader (pid {pid}) already uses {self.root}; stop it "
                             f"(sudo kill {pid}) or give this one its own --records DIR") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        return fd

    def _may_lock(self) -> bool:
        if self._shared.depth:
            return True
        lock = self.root / LOCK_NAME
        return os.access(lock, os.R_OK | os.W_OK) if lock.exists() else os.access(self.root, os.W_OK)
