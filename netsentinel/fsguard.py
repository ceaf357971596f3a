"""Ownership and modes of records/ and the files in it (the store's floor).

We run as root and read commands from records/: whoever can write there
drives the loader. So:
- the records directory, and every directory above it, must not be writable
  by other users (a sticky directory such as /tmp above it is fine), and when
  we run as root it must be owned by root;
- command files (ban_commands.json, rule_commands.json) are root:netsentinel
  0660: people in the netsentinel group and the dashboard may queue commands;
  the drop directories (ban_commands.d/) are root:netsentinel 2770; every
  other file is root 0644, the lock files root 0600;
- modes are set with fchmod after creation, so the umask does not matter;
- a lock file another user can open is replaced (flock works on a read-only
  descriptor: a world-readable lock file lets anyone stall every writer).
Every refusal names the fix (chown/chmod).
"""

from __future__ import annotations

import contextlib
import errno
import grp
import os
import stat
import tempfile
from pathlib import Path

COMMAND_GROUP = "netsentinel"
FILE_MODE = 0o644
COMMAND_MODE = 0o660
LOCK_MODE = 0o600
DIR_MODE = 0o755
DROP_DIR_MODE = 0o2770


class UnsafePath(Exception):
    """A path other users could have written; str() is one line naming the fix."""


def command_gid() -> int:
    """The netsentinel group (scripts/install.sh creates it); root's group if missing."""
    try:
        return grp.getgrnam(COMMAND_GROUP).gr_gid
    except KeyError:
        return 0


def _trusted_owner(uid: int) -> bool:
    """root, us, or (run through sudo) the person who ran sudo: they are root
    already, so a checkout they own may hold records/."""
    sudo_uid = os.environ.get("SUDO_UID", "") if os.geteuid() == 0 else ""
    return uid == 0 or uid == os.geteuid() or (sudo_uid.isdigit() and uid == int(sudo_uid))


def check_dir(path: Path, *, group_ok: bool = False) -> None:
    """Refuse a directory (or any directory above it) that someone other than
    root or us can write. group_ok: the netsentinel group may write it."""
    real = Path(os.path.realpath(path))
    allowed_gids = {0, command_gid()} if group_ok else set()
    for i, d in enumerate([real, *real.parents]):
        st = os.lstat(d)
        if os.geteuid() == 0 and i == 0 and st.st_uid != 0:
            raise UnsafePath(f"{d} is owned by uid {st.st_uid}, not root: its owner could queue "
                             f"commands root applies; fix: chown root:root {d}")
        if not _trusted_owner(st.st_uid):
            raise UnsafePath(f"{d} is owned by uid {st.st_uid}; fix: chown root:root {d}, "
                             "or use a records directory elsewhere")
        sticky = bool(st.st_mode & stat.S_ISVTX) and i > 0
        if st.st_mode & stat.S_IWOTH and not sticky:
            raise UnsafePath(f"{d} is writable by other users; fix: chmod o-w {d}")
        if st.st_mode & stat.S_IWGRP and not sticky and st.st_gid not in (allowed_gids | {0}):
            raise UnsafePath(f"{d} is writable by group {st.st_gid}; fix: chmod g-w {d}")


def check_file(st: os.stat_result, path: Path, *, any_owner: bool = False) -> None:
    """Refuse a file others can write, or (as root, unless any_owner: the
    drop directories, where group members' files arrive) one another user owns."""
    if not stat.S_ISREG(st.st_mode):
        raise UnsafePath(f"{path} is not a regular file; remove it")
    if st.st_mode & stat.S_IWOTH:
        raise UnsafePath(f"{path} is writable by other users; fix: chmod o-w {path}")
    if os.geteuid() == 0 and st.st_uid != 0 and not any_owner:
        raise UnsafePath(f"{path} is owned by uid {st.st_uid}, not root; fix: chown root {path}")


def set_mode(fd: int, mode: int, *, group: bool = False) -> None:
    """Exact mode (whatever the umask) and, as root, root ownership; group:
    the netsentinel group."""
    if os.geteuid() == 0:
        os.fchown(fd, 0, command_gid() if group else 0)
    os.fchmod(fd, mode)


def ensure_dir(path: Path, mode: int, *, group: bool = False) -> None:
    """Create a directory with exactly mode (and owner), or repair its mode."""
    with contextlib.suppress(FileExistsError):
        os.mkdir(path, 0o700)
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        want_gid = command_gid() if group else 0
        if stat.S_IMODE(st.st_mode) != mode or (os.geteuid() == 0 and
                                                 (st.st_uid, st.st_gid) != (0, want_gid)):
            set_mode(fd, mode, group=group)
    finally:
        os.close(fd)


def open_lock(path: Path) -> tuple[int, str | None]:
    """Open (creating) a lock file only root (or our user) can open. A lock
    file with a wider mode or another owner is replaced by a fresh one, since
    whoever opened it already keeps the descriptor after a chmod. Returns the
    descriptor and a one-line warning when something was repaired."""
    flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(path, flags, LOCK_MODE)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise UnsafePath(f"refusing to use {path}: it is a symbolic link; remove it") from e
        if e.errno == errno.EACCES:
            raise UnsafePath(f"cannot open lock file {path}: Permission denied (only root may "
                             "write records/ under the lock; other users queue commands in "
                             "ban_commands.d/)") from e
        raise
    st = os.fstat(fd)
    if stat.S_IMODE(st.st_mode) == LOCK_MODE and st.st_uid == os.geteuid() and st.st_nlink == 1:
        return fd, None
    os.close(fd)
    tfd, tmp = tempfile.mkstemp(prefix=f"{path.name}.", suffix=".new", dir=path.parent)
    try:
        set_mode(tfd, LOCK_MODE)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        os.close(tfd)
        raise
    return tfd, (f"replaced lock file {path} (mode {stat.S_IMODE(st.st_mode):o}, uid "
                 f"{st.st_uid}): other users could open it and stall every writer")


def read_capped(path: Path, max_bytes: int, *,
                any_owner: bool = False) -> tuple[bytes | None, os.stat_result | None]:
    """A file's bytes (None when missing), refusing links, non-regular files,
    files others may write and files over max_bytes, without reading them."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return None, None
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise UnsafePath(f"{path} is a symbolic link; remove it") from e
        raise UnsafePath(f"cannot read {path}: {e.strerror}") from e
    try:
        st = os.fstat(fd)
        check_file(st, path, any_owner=any_owner)
        if st.st_size > max_bytes:
            raise UnsafePath(f"{path} is {st.st_size} bytes, more than the {max_bytes} allowed")
        chunks, left = [], max_bytes + 1
        while left > 0:
            b = os.read(fd, min(left, 1 << 20))
            if not b:
                break
            chunks.append(b)
            left -= len(b)
        data = b"".join(chunks)
        if len(data) > max_bytes:
            raise UnsafePath(f"{path} grew past the {max_bytes} bytes allowed while being read")
        return data, st
    finally:
        os.close(fd)


def secret_file_ok(path: str | os.PathLike, warn) -> bool:
    """Whether to read a secrets file (.env): no when missing, when other
    users can write it (they would choose our API endpoints and keys) or, as
    root, when another user owns it; a warning when others can read it."""
    try:
        st = os.stat(path)
    except OSError:
        return False
    if st.st_mode & stat.S_IWOTH or (os.geteuid() == 0 and st.st_uid != 0):
        warn(f"ignoring {path}: other users can change it; fix: chown root {path} && "
             f"chmod 600 {path}")
        return False
    if st.st_mode & stat.S_IROTH:
        warn(f"{path} is readable by every user (API keys); fix: chmod 600 {path}")
    return True
