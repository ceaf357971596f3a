"""Has a file changed since we last looked? One answer for every hot-reloaded
file (the command queues, the whitelist, llm_config.json, known-bad lists).

A stat signature (mtime, ctime, size, inode) alone is blind to a same-size
rewrite in place within one timestamp tick: the kernel stamps files from a
coarse clock (a few ms; 1-2 s on some filesystems), so `echo 1 > f; echo 2 > f`
can leave every stat field as it was. The gap only exists while the file's
ctime is younger than a tick: any later write gets a later ctime, and ctime
cannot be set back (os.utime changes mtime, never ctime). So while a small
file is that young we also hash its content, and once it has settled we stop
reading it. A large file (over SMALL bytes) is judged by stat alone.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
import time
from pathlib import Path

SMALL = 256 * 1024  # bytes; larger files are not hashed (a known-bad list may be big)
SETTLE_S = 2.0      # coarsest timestamp tick of a filesystem we may sit on (FAT: 2 s)
_UNSEEN = object()


class FileSignature:
    """changed() is True on the first call and whenever the file (or its
    absence) differs from the previous call. Not thread-safe: one owner."""

    def __init__(self, path: str | os.PathLike, *, follow_symlinks: bool = False):
        self.path = Path(path)
        self.follow_symlinks = follow_symlinks  # records/ files: never follow (we run as root)
        self.present = False
        self.error: str | None = None  # why the file could not be looked at (strerror)
        self._key: object = _UNSEEN
        self._last_digest: bytes | None = None  # set while the file is young

    def _stat(self) -> os.stat_result | None:
        try:
            st = os.stat(self.path) if self.follow_symlinks else os.lstat(self.path)
        except OSError as e:
            self.present, self.error = False, e.strerror
            return None
        self.present, self.error = True, None
        return st

    def _young(self, st: os.stat_result) -> bool:
        return time.time() - st.st_ctime < SETTLE_S

    def _digest(self, st: os.stat_result) -> bytes | None:
        """Content digest of a small regular file; None for anything else."""
        if not stat.S_ISREG(st.st_mode) or st.st_size > SMALL:
            return None
        flags = os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | (0 if self.follow_symlinks else os.O_NOFOLLOW)
        try:
            with os.fdopen(os.open(self.path, flags), "rb") as f:
                return hashlib.blake2b(f.read(SMALL + 1), digest_size=16).digest()
        except OSError as e:
            # Swapped or gone since the stat: something that compares unequal
            # to any content; the next look sees the new file's stat.
            return f"!{errno.errorcode.get(e.errno, e.errno)}".encode()

    def changed(self) -> bool:
        st = self._stat()
        key = (None if st is None else
               (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_mode))
        if key != self._key:
            self._key = key
            self._last_digest = self._digest(st) if st is not None and self._young(st) else None
            return True
        if st is None or self._last_digest is None:
            return False  # it had settled when last seen: stat alone is decisive
        # Young when last seen: the content decides. Once it has settled, any
        # later write moves ctime, so stop reading it.
        digest = self._digest(st)
        changed = digest != self._last_digest
        self._last_digest = digest if self._young(st) else None
        return changed

    def remember(self) -> None:
        """Take the file as it is now as seen (after our own write)."""
        self._key = _UNSEEN
        self.changed()

    def forget(self) -> None:
        """Make the next changed() True (reload on demand)."""
        self._key = _UNSEEN
