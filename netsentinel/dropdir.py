"""The append-only drop directories: records/ban_commands.d/ and
records/rule_commands.d/ (the loader's), records/dashboard_commands.d/ (the
analyzer's, netsentinel/dashcmd.py); root:netsentinel 2770.

Whoever may queue commands (root, the netsentinel group, the dashboard)
drops one file per command (or a list of commands) there; the loader
consumes each file (applies or refuses every command in it) and removes it.
Unlike the single command file, no write can replace another, and no lock
is needed, so nothing is lost however often scripts write:

    f=records/ban_commands.d/$(date +%s%N)-$$.json
    echo '{"action": "ban", "ip": "203.0.113.9"}' > "$f.tmp" && mv "$f.tmp" "$f"

Names starting with '.' or ending in '.tmp' are ignored (files being
written); files are taken in mtime order, then by name.
"""

from __future__ import annotations

import contextlib
import os
import stat
import time
from pathlib import Path
from typing import Any

from . import fsguard, jsonsafe
from .records import COMMAND_FILES, DROP_DIRS


def drop_dir_name(command_file: str) -> str:
    """ban_commands.json → ban_commands.d (records.DROP_DIRS)"""
    return DROP_DIRS[COMMAND_FILES.index(command_file)]


def ensure(root: Path, command_file: str) -> Path:
    """Create (or repair the mode of) a drop directory: root:netsentinel 2770."""
    return ensure_named(root, drop_dir_name(command_file))


def ensure_named(root: Path, drop_name: str) -> Path:
    """ensure() by the directory's own name (records.DASHBOARD_COMMANDS)."""
    d = Path(root) / drop_name
    fsguard.ensure_dir(d, fsguard.DROP_DIR_MODE, group=True)
    return d


def _ignored(name: str) -> bool:
    return name.startswith(".") or name.endswith(".tmp")


def _check(d: Path) -> bool:
    """True when d is a usable drop directory; False when missing."""
    try:
        st = os.lstat(d)
    except FileNotFoundError:
        return False
    if not stat.S_ISDIR(st.st_mode):
        raise fsguard.UnsafePath(f"{d} is not a directory; remove it")
    fsguard.check_dir(d, group_ok=True)
    return True


def list_files(root: Path, drop_name: str) -> list[str]:
    """Names waiting in a drop directory, oldest first."""
    d = Path(root) / drop_name
    if not _check(d):
        return []
    entries = []
    with os.scandir(d) as it:
        for e in it:
            if _ignored(e.name):
                continue
            with contextlib.suppress(FileNotFoundError):
                entries.append((e.stat(follow_symlinks=False).st_mtime_ns, e.name))
    entries.sort()
    return [name for _, name in entries]


def read(root: Path, drop_name: str, fname: str) -> tuple[bytes | None, os.stat_result | None]:
    """A drop file's bytes (None if gone). Raises fsguard.UnsafePath for a
    link, a non-regular file, a file others may write or one too big."""
    return fsguard.read_capped(Path(root) / drop_name / fname, jsonsafe.MAX_BYTES, any_owner=True)


def remove(root: Path, drop_name: str, fname: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(Path(root) / drop_name / fname)


def submit(root: Path, drop_name: str, command: Any) -> Path:
    """Drop one command (the writer's side): written under a '.tmp' name, then
    renamed, so the loader never sees half a file."""
    return submit_bytes(root, drop_name, jsonsafe.dump_bytes(command), str(os.getpid()))


def submit_bytes(root: Path, drop_name: str, payload: bytes, tag: str) -> Path:
    """Drop a file of commands as written (unparsed: the loader refuses what
    is not commands, with the reason); tag goes in the name."""
    d = Path(root) / drop_name
    if not _check(d):
        raise fsguard.UnsafePath(f"{d} does not exist; start the loader once (it creates it) "
                                 "or run scripts/install.sh")
    base = f"{time.time_ns()}-{tag}-{os.urandom(4).hex()}.json"
    tmp = d / f".{base}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        os.fchmod(fd, 0o640)
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.rename(tmp, d / base)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return d / base
