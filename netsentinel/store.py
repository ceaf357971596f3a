"""The one owner of every read and write under records/.

Every NetSentinel process (loader, analyzer, dashboard, user_whitelist CLI)
goes through RecordsStore; nothing else opens those files.

Guarantees:
- Writes are atomic: temp file in the same directory, fsync, os.replace,
  directory fsync. A reader sees the old or the new file, never half.
- Read-modify-write cycles run under one advisory lock file
  (records/.lock, flock), shared by every writer, with a timeout. flock is
  released by the kernel when a process dies, so a crashed writer never
  leaves a stale lock behind. The lock file is root 0600 (fsguard): flock
  works on any descriptor, so a lock others could open would let them stall
  every writer. Processes that cannot open it (the netsentinel group) queue
  commands in the drop directories instead (dropdir).
- A file that does not parse is set aside as NAME.corrupt-<UTC time> and
  reported; it is never overwritten.
- Symlinks are not followed (the directory may be writable by a person; we
  run as root): reading or writing through a link is refused.
- Modes and owners are exact whatever the umask (fsguard): files root
  0644, command files root:netsentinel 0660, the directory 0755; a records
  directory other users can write, or (as root) one another user owns, is
  refused with the fix.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import stat
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from . import dropdir, fsguard, jsonsafe
from .records import BAN_COMMANDS, BAN_COMMANDS_REJECTED, COMMAND_FILES  # noqa: F401
from .storelock import (LOCK_NAME, CorruptFile, LockTimeout, RecordsLock,  # noqa: F401
                        StoreError, _dir_lock)
from .fsguard import DIR_MODE, FILE_MODE  # noqa: F401  (re-exported)
from .timefmt import utc_now_iso

READ_MAX_BYTES = 512 * 1024 * 1024
READ_MAX_DEPTH = 64
REJECT_DEDUP_WINDOW = 10000  # refusals a re-handled command is checked against


def _default_warn(msg: str) -> None:
    print(f"netsentinel: {msg}", file=sys.stderr, flush=True)


class RecordsStore(RecordsLock):
    """Locked, atomic JSON files in one directory.

    warn: called with a one-line message when something is set aside or
    refused; defaults to stderr. Processes that emit events pass their own.
    """

    def __init__(self, root: str | os.PathLike, *, lock_timeout: float = 10.0,
                 warn: Callable[[str], None] | None = None):
        self.root = Path(root)
        self.lock_timeout = lock_timeout
        self.warn = warn or _default_warn
        self.ensure_dir()
        self._shared = _dir_lock(self.root)

    # ----------------------------------------------------------------- paths
    def ensure_dir(self) -> None:
        try:
            is_link = self.root.is_symlink()
        except OSError as e:  # e.g. a parent folder we may not search
            raise StoreError(f"cannot use records directory {self.root}: {e.strerror}") from e
        if is_link:
            # A link made by the owner is fine as long as it leads to a directory.
            if not self.root.resolve().is_dir():
                raise StoreError(f"records directory {self.root} is a dangling link")
            self._check_owner()
            return
        try:
            self.root.parent.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
            if not self.root.exists():
                fsguard.ensure_dir(self.root, DIR_MODE)
        except OSError as e:
            raise StoreError(f"cannot create records directory {self.root}: {e.strerror}") from e
        if not self.root.is_dir():
            raise StoreError(f"records path {self.root} is not a directory")
        self._check_owner()

    def _check_owner(self) -> None:
        try:
            fsguard.check_dir(self.root)  # the real directory and all above it
            if self.root.is_symlink():  # and where the link lives: its owner could re-point it
                fsguard.check_dir(self.root.parent)
        except fsguard.UnsafePath as e:
            raise StoreError(f"refusing records directory: {e}") from None

    def path(self, name: str) -> Path:
        if "/" in name or name.startswith("."):
            raise StoreError(f"invalid records file name {name!r}")
        return self.root / name

    # ------------------------------------------------------------------ read
    def stat(self, name: str) -> os.stat_result | None:
        try:
            return os.lstat(self.path(name))
        except FileNotFoundError:
            return None

    def read_text(self, name: str) -> str | None:
        """Raw text of a file, None when missing. Refuses symbolic links."""
        p = self.path(name)
        try:
            fd = os.open(p, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise StoreError(f"refusing to read {p}: it is a symbolic link") from e
            raise StoreError(f"cannot read {p}: {e.strerror}") from e
        if not stat.S_ISREG(os.fstat(fd).st_mode):  # e.g. a directory put in its place
            os.close(fd)
            raise StoreError(f"cannot read {p}: not a regular file")
        with os.fdopen(fd, "r", encoding="utf-8", errors="replace") as f:
            return f.read()

    def read(self, name: str, default: Any = None, *, on_corrupt: str = "set_aside") -> Any:
        """Parsed JSON of a file; `default` when missing or empty.

        on_corrupt: 'set_aside' moves a file that does not parse to
        NAME.corrupt-<time>, warns, and returns default; 'raise' raises
        CorruptFile; 'default' returns default and leaves the file alone
        (for read-only viewers such as the dashboard's refresh loop).
        """
        text = self.read_text(name)
        if text is None or not text.strip():
            return _copy_default(default)
        try:
            # Total: NaN, depth bombs and lone surrogates are "corrupt", not a crash.
            return jsonsafe.loads(text, max_bytes=READ_MAX_BYTES, max_depth=READ_MAX_DEPTH)
        except jsonsafe.JsonRefused as e:
            msg = f"{name}: {e}"
            if on_corrupt == "raise":
                raise CorruptFile(msg) from e
            if on_corrupt == "set_aside":
                aside = self.set_aside(name, text)
                self.warn(f"{msg}; set aside as {aside.name}")
            return _copy_default(default)

    def set_aside(self, name: str, text: str | None = None, src: Path | None = None) -> Path:
        """Move a file (name, or src kept under name's aside name) out of the
        way (never overwriting another one)."""
        with self.locked():
            stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
            aside = self.path(f"{name}.corrupt-{stamp}")
            src = src or self.path(name)
            try:
                os.rename(src, aside)
            except FileNotFoundError:
                if text is not None:
                    self._write_bytes(aside.name, text.encode())
            return aside

    # ----------------------------------------------------------------- write
    def write(self, name: str, data: Any, *, lock: bool = True, compact: bool = False) -> None:
        """Atomically replace a file with the JSON of data (under the lock).
        lock=False: a file only this process writes (the loader's status), so
        that a lock held elsewhere cannot keep it stale. compact: no
        indentation, so json's C encoder runs (about 3x faster; big files)."""
        text = json.dumps(data, indent=None if compact else 2, ensure_ascii=False) + "\n"
        try:
            payload = text.encode()
        except UnicodeEncodeError:
            # A str carrying bytes that are not UTF-8 (a process name read
            # with surrogateescape): written as \xNN text, never a crash.
            from .events import scrub_value
            payload = (json.dumps(scrub_value(data), indent=None if compact else 2,
                                  ensure_ascii=False) + "\n").encode()
        if not lock:
            self._write_bytes(name, payload)
            return
        with self.locked():
            self._write_bytes(name, payload)

    def write_bytes(self, name: str, payload: bytes) -> None:
        """write() for JSON already encoded by the caller (the ban table
        keeps each ban's text until it changes), under the lock."""
        with self.locked():
            self._write_bytes(name, payload)

    def _write_bytes(self, name: str, payload: bytes) -> None:
        target = self.path(name)
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=self.root)
        try:
            fsguard.set_mode(fd, fsguard.COMMAND_MODE if name in COMMAND_FILES else FILE_MODE,
                             group=name in COMMAND_FILES)
            with os.fdopen(fd, "wb") as f:
                f.write(payload)
                f.flush()
                os.fsync(f.fileno())
            # os.replace swaps the directory entry: a symlink at target is
            # replaced, never followed.
            os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        dfd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)

    def update(self, name: str, fn: Callable[[Any], Any], default: Any = None, *,
               on_corrupt: str = "set_aside", compact: bool = False) -> Any:
        """Read-modify-write under the lock. fn gets the current value (or
        default) and returns the new value; returning None leaves the file
        untouched. Returns what fn returned. on_corrupt as for read();
        compact as for write()."""
        with self.locked():
            cur = self.read(name, default, on_corrupt=on_corrupt)
            new = fn(cur)
            if new is not None:
                self.write(name, new, compact=compact)
            return new

    def append_jsonl_many(self, name: str, objs: list, *, max_bytes: int = 50 * 1024 * 1024,
                          keep: int = 3) -> None:
        """Append JSON lines in as few writes as possible (a batching writer
        such as the analyzer's history); past max_bytes the file rotates to
        NAME.1..NAME.keep."""
        lines = [(json.dumps(o, ensure_ascii=False) + "\n").encode() for o in objs]
        with self.locked():
            p = self.path(name)
            i = 0
            while i < len(lines):
                # Fill the current file up to max_bytes (at least one line), then rotate.
                st = self.stat(name)
                size = st.st_size if st is not None else 0
                if size and size + len(lines[i]) > max_bytes:
                    for k in range(keep - 1, 0, -1):
                        src = self.path(f"{name}.{k}")
                        if src.exists():
                            os.replace(src, self.path(f"{name}.{k + 1}"))
                    os.replace(p, self.path(f"{name}.1"))
                    size = 0
                j, chunk = i, 0
                while j < len(lines) and (j == i or size + chunk + len(lines[j]) <= max_bytes):
                    chunk += len(lines[j])
                    j += 1
                fd = os.open(p, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW
                             | os.O_CLOEXEC, FILE_MODE)
                if not size:  # just created: exact mode whatever the umask
                    fsguard.set_mode(fd, FILE_MODE)
                with os.fdopen(fd, "ab") as f:
                    f.write(b"".join(lines[i:j]))
                i = j

    def remove(self, name: str) -> bool:
        """Delete a file under the lock (the analyzer's --clear); True when
        there was one. A symbolic link is removed, never followed."""
        with self.locked():
            try:
                os.unlink(self.path(name))
                return True
            except FileNotFoundError:
                return False

    # ------------------------------------------------------- ban commands API
    def append_command(self, command: dict, *, name: str = BAN_COMMANDS) -> dict:
        """Queue one command for the loader (any process may call): a ban or
        unban in ban_commands.json, or a rule command in rule_commands.json.
        A process that may not take the lock (not root: the netsentinel
        group) drops it in ban_commands.d/ (rule_commands.d/) instead."""
        cmd = dict(command)
        cmd.setdefault("requested_at", utc_now_iso())
        if not self._may_lock():
            try:
                dropdir.submit(self.root, dropdir.drop_dir_name(name), cmd)
            except (fsguard.UnsafePath, OSError) as e:
                raise StoreError(f"cannot queue the command: {e}") from None
            return cmd

        with self.locked():
            try:  # the loader's reading: `>>` appends leave several values
                cur = jsonsafe.loads_commands(self.read_text(name) or "")
            except jsonsafe.JsonRefused as e:
                # Not commands: keep it aside for its author, start afresh.
                aside = self.set_aside(name)
                self.warn(f"{name}: {e}; set aside as {aside.name}")
                cur = []
            self.write(name, cur + [cmd])
        return cmd

    def reject_command(self, command: Any, error: str, *, source: str = "loader",
                       name: str = BAN_COMMANDS_REJECTED, ref: str | None = None) -> None:
        """Keep a refused command, with why, in ban_commands.rejected.json
        (or another *.rejected.json). ref names the command's place in the
        queue: refusing the same ref again (after a crash) records nothing."""
        entry = {"command": command, "error": error, "rejected_at": utc_now_iso(), "by": source}
        if ref is not None:
            entry["ref"] = ref

        def add(cur: Any) -> list | None:
            if not isinstance(cur, list):
                cur = []
            if ref is not None and any(isinstance(e, dict) and e.get("ref") == ref
                                       for e in cur[-REJECT_DEDUP_WINDOW:]):
                return None
            cur.append(entry)
            return cur

        self.update(name, add, default=[])


def _copy_default(default: Any) -> Any:
    if isinstance(default, (list, dict)):
        return type(default)(default)
    return default
