"""What containment may touch, and how a process is named (loader/contain.py):
shared executables never contained by executable, the processes never
contained at all, a pid's identity (its start time), its descendants, and
the tag an executable's kernel entries carry."""

from __future__ import annotations

import os
import zlib

from ..kernel.contain import exe_identity
from .egress import socket_cookie
from .procinfo import read_ppid

# Executables shared by every user and service: containing one by executable
# would cut off every copy (each login shell, the admin's session); their
# processes are contained by pid only, and the event says so.
SHARED_EXES = frozenset({"sh", "bash", "dash", "zsh", "ksh", "mksh", "fish", "tcsh", "csh", "busybox",
                         "env", "sudo", "su", "sshd", "systemd", "init", "perl", "ruby", "node", "php",
                         "lua", "tclsh", "java"})


def descendants(pid: int) -> list[int]:
    """Every process below pid, from one pass over /proc (one stat file each)."""
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            ppid = read_ppid(int(name))
            if ppid is None:
                continue   # gone meanwhile
            children.setdefault(ppid, []).append(int(name))
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def socket_cookies(pid: int) -> list[int]:
    """SO_COOKIE of every socket process pid holds now (pidfd_getfd):
    what ns_contain_skb cuts. Empty when it is gone."""
    out = []
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return out
    for fd in fds:
        try:
            if not os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:"):
                continue
        except OSError:
            continue
        cookie = socket_cookie(pid, int(fd))
        if cookie is not None:
            out.append(cookie)
    return out


def running(dev: int, ino: int) -> list[int]:
    """The processes whose executable is (dev, ino) now."""
    out = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                if exe_identity(f"/proc/{name}/exe") == (dev, ino):
                    out.append(int(name))
            except OSError:
                continue
    return out


def exe_tag(dev: int, ino: int) -> int:
    """The `origin` an executable's entry carries, and with it the entries of
    children forked from its processes: bit 31 set, so never a pid (at most
    2^22), and derived from the identity, so the same after a restart."""
    return 0x80000000 | (zlib.crc32(f"{dev}:{ino}".encode()) & 0x7FFFFFFF)


def shared_exe(path: str) -> bool:
    base = os.path.basename(path)
    return base in SHARED_EXES or base.startswith(("python", "perl", "ruby", "php", "node"))


def protected_pids() -> set[int]:
    """pid 1, this loader and its ancestors (the supervisor, the shell that runs it)."""
    out, pid = {1}, os.getpid()
    while pid > 1 and pid not in out:
        out.add(pid)
        pid = read_ppid(pid) or 1   # gone or unreadable: stop at pid 1
    return out
