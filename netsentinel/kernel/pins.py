"""Enforcement that outlives the loader: one bpffs directory per interface.

    <pin root>/<ifname>/            (default root /sys/fs/bpf/netsentinel)
        bans4 bans6 rules rule_state rule_hits counters flows flow_epoch meta   maps (BCC pins them)
        link_xdp link_connect4 link_connect6 link_sendmsg4 link_sendmsg6      BPF links

A pinned link keeps its program attached after the process that made it is
gone, SIGKILL included; the next loader opens the same maps and swaps the
program through the link (bpf_link_update). Only unload() takes it down.

One loader per interface and per pin directory (LoaderLock: flocks on
root-only files under /run/netsentinel/locks, as bpffs holds no regular
files); a second loader, or an --unload while a loader runs, is refused with
the holder's pid.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
import time
from pathlib import Path
from typing import Callable

from ..abi import ENFORCER_MAPS
from ..records import LOCK_NAME as LOCK_SUFFIX  # the same ".lock" ending as records/'s lock
from . import KernelError
from .libbpf import link_detach, obj_get

DEFAULT_PIN_ROOT = "/sys/fs/bpf/netsentinel"
LOCK_DIR = Path("/run/netsentinel/locks")
BPF_FS_MAGIC = 0xCAFE4A11
LINK_PREFIX = "link_"


def is_bpffs(path: str) -> bool:
    """Is path on a bpf filesystem? (statfs f_type, via /proc/self/mountinfo
    to avoid a ctypes statfs: the longest mount point containing path)."""
    best, fstype = "", ""
    real = os.path.realpath(path)
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            mnt = left.split()[4].replace("\\040", " ")
            if (real == mnt or real.startswith(mnt.rstrip("/") + "/")) and len(mnt) >= len(best):
                best, fstype = mnt, right.split()[0]
    return fstype == "bpf"


def _untrusted(path) -> str | None:
    """Why path (if it exists) is not a directory only root controls."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    if not stat.S_ISDIR(st.st_mode):
        return "not a directory"
    if st.st_uid != 0:
        return f"owned by uid {st.st_uid}"
    if st.st_mode & 0o022:
        return "writable by other users"
    return None


def _root_only_dir(path: Path) -> None:
    """mkdir -p with mode 0700, refusing a directory another user could write."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    why = _untrusted(path)
    if why:
        raise KernelError(f"{path} must be a directory owned by root and writable by nobody else "
                          f"(it is {why}); remove it (sudo rm -r {path}) and start again")


class PinDir:
    def __init__(self, root: str, ifname: str):
        if not ifname or "/" in ifname or ifname in (".", ".."):
            raise ValueError(f"bad interface name {ifname!r}")
        self.root = os.path.abspath(root)
        self.ifname = ifname
        # bpffs refuses names with a dot (kept for its own *.debug files), and
        # VLAN interfaces have one (eth0.100): percent-escape it, reversibly.
        self.path = os.path.join(self.root, ifname.replace("%", "%25").replace(".", "%2E"))

    def prepare(self, warn: Callable[[str], None]) -> None:
        """Make <root>/<ifname>, root's alone. /sys/fs/bpf is often world-
        writable (mode 1777): a local user who made <root> first, to stop the
        loader from starting, gets it moved aside (root may, in a sticky
        directory) and reported, instead of switching enforcement off."""
        why = _untrusted(self.root)
        if why:
            aside = f"{self.root}-untrusted-{time.strftime('%Y%m%dT%H%M%S')}"   # no dots on bpffs
            os.rename(self.root, aside)
            warn(f"{self.root} was {why}, not NetSentinel's: moved aside to {aside} (find out who "
                 "made it); using a fresh one")
        parent = os.path.dirname(self.root)
        if not is_bpffs(parent if not os.path.exists(self.root) else self.root):
            raise KernelError(f"{self.root} is not on a bpf filesystem; mount one "
                              f"(`mount -t bpf bpf {parent}`) or pass --pin-dir on bpffs")
        try:
            _root_only_dir(Path(self.root))
            _root_only_dir(Path(self.path))
        except PermissionError as e:
            raise KernelError(f"cannot create {e.filename} on bpffs ({e.strerror}); bpffs names "
                              "cannot contain '.': pick a --pin-dir without one") from e

    def unload_command(self) -> str:
        """What a person types to take this interface's enforcement down."""
        pin = "" if self.root == DEFAULT_PIN_ROOT else f" --pin-dir {self.root}"
        return f"unified_ebpf.py --unload -i {self.ifname}{pin}"

    def link_path(self, name: str) -> str:
        return os.path.join(self.path, LINK_PREFIX + name)

    def pinned(self) -> list[str]:
        try:
            return sorted(os.listdir(self.path))
        except FileNotFoundError:
            return []

    def has_maps(self) -> bool:
        return any(n in ENFORCER_MAPS for n in self.pinned())

    def open_link(self, name: str) -> int | None:
        try:
            return obj_get(self.link_path(name))
        except FileNotFoundError:
            return None


class LoaderLock:
    """One loader per interface and per pin directory: an flock on a
    root-only (0600) file for each, under /run/netsentinel/locks, holding the
    owner's pid. The interface file is named by network namespace and
    interface name, so `lo` in two namespaces are two interfaces. A holder
    unlinks its files while still holding them, and a taker checks that the
    file it locked is still the one at that path, so removal never lets two in."""

    def __init__(self, pins: PinDir, *, interface: bool = True):
        self.paths = [LOCK_DIR / f"pin-{pins.path.strip('/').replace('/', '_')}{LOCK_SUFFIX}"]
        if interface:
            netns = os.stat("/proc/self/ns/net").st_ino
            self.paths.insert(0, LOCK_DIR / f"if-net{netns}-{pins.ifname}{LOCK_SUFFIX}")
        self.path = self.paths[-1]
        self._held: list[tuple[Path, int]] = []

    def acquire(self, what: str) -> None:
        _root_only_dir(LOCK_DIR.parent)
        _root_only_dir(LOCK_DIR)
        try:
            for path in self.paths:
                self._held.append((path, self._lock(path, what)))
        except BaseException:
            self.release()
            raise

    @staticmethod
    def _lock(path: Path, what: str) -> int:
        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            st = os.fstat(fd)
            if st.st_uid != 0 or st.st_mode & 0o077:
                os.close(fd)
                raise KernelError(f"{path} is not root's alone; remove it (sudo rm {path})")
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
                os.close(fd)
                if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                    raise
                raise KernelError(f"another loader (pid {holder}) already runs with {what}; stop it "
                                  f"first (sudo kill {holder}) or use another interface") from None
            try:
                current = os.stat(path).st_ino
            except FileNotFoundError:
                current = None
            if current == st.st_ino:
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
                return fd
            os.close(fd)   # its holder removed it as we took it: lock the new one

    def release(self) -> None:
        while self._held:
            path, fd = self._held.pop()
            try:
                path.unlink(missing_ok=True)   # still held: see the class comment
            finally:
                os.close(fd)


def unload(root: str, ifname: str, report: Callable[[str], None]) -> int:
    """Detach and unpin everything pinned for ifname; one report line per
    object. Returns how many objects were removed."""
    pins = PinDir(root, ifname)
    lock = LoaderLock(pins, interface=False)   # --unload may run from another namespace
    lock.acquire(f"pins in {pins.path} (stop it before --unload)")
    removed = 0
    try:
        # Links first: nothing runs any more by the time its maps go.
        for name in sorted(pins.pinned(), key=lambda n: not n.startswith(LINK_PREFIX)):
            path = os.path.join(pins.path, name)
            if name.startswith(LINK_PREFIX):
                fd = obj_get(path)
                try:
                    link_detach(fd)
                    report(f"detached link {name[len(LINK_PREFIX):]} ({path})")
                except OSError as e:   # e.g. the device went away and took the link down
                    if e.errno == errno.EOPNOTSUPP:   # a tracepoint (perf_event) link: unpinning ends it
                        report(f"detached link {name[len(LINK_PREFIX):]} ({path}, by unpinning)")
                    else:
                        report(f"link {name[len(LINK_PREFIX):]} was already detached ({e.strerror}); "
                               f"unpinned {path}")
                finally:
                    os.close(fd)
            else:
                report(f"removed map {name} ({path})")
            os.unlink(path)
            removed += 1
        for d in (pins.path, pins.root):
            if os.path.ismount(d):
                continue
            try:
                os.rmdir(d)
                report(f"removed directory {d}")
            except FileNotFoundError:
                pass
            except OSError as e:
                if e.errno != errno.ENOTEMPTY:   # the root may hold other interfaces
                    raise
        if removed == 0:
            report(f"nothing pinned for {ifname} in {pins.path}")
    finally:
        lock.release()
    return removed
