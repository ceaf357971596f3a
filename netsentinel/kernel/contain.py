"""Containment in the kernel (issue 12): the pinned `contain_pids` and
`contain_exes` maps of bpf/enforce.bpf.c, the cgroup socket-creation hook,
and the two sched tracepoints that follow a contained process tree.

A mixin of Enforcer (kernel/enforcer.py), like maps.EnforcerMaps. The
tracepoint programs are attached through perf_event BPF links, pinned like
the cgroup links, so children of a contained process are contained, and
exited processes' entries dropped, while no loader runs too.

Executable identity is (dev, inode) of the task's mm->exe_file, read in the
hook through offsets from this kernel's BTF (kernel/btf.py); the loader
computes the same pair with stat(2) on /proc/PID/exe or the path, turning
st_dev into the kernel's dev_t (major << 20 | minor).
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import platform
import re
import time
from dataclasses import dataclass
from typing import Callable

from ..abi import CONTAIN_SKB_LINKS, CONTAIN_SKB_PROG, CONTAIN_TRACEPOINTS, ENFORCER_SOCK_CREATE
from . import KernelError
from .btf import CONTAIN_OFFSETS, BTFError, offsets
from .host import ensure_cgroup2_root
from .libbpf import (ATTACH_CGROUP_INET_EGRESS, ATTACH_CGROUP_INET_INGRESS,
                     ATTACH_CGROUP_INET_SOCK_CREATE, ATTACH_PERF_EVENT, link_create, link_detach, obj_pin)
from .maps import epoch_to_boottime, ktime_to_epoch

TRACEFS = ("/sys/kernel/tracing", "/sys/kernel/debug/tracing")
_FIELD = re.compile(r"field:[^;]*?\b(\w+)(?:\[\d*\])?;\s*offset:(\d+);")
PERF_TYPE_TRACEPOINT = 2
PERF_FLAG_FD_CLOEXEC = 8
PERF_EVENT_IOC_ENABLE = 0x2400
_PERF_EVENT_OPEN = {"x86_64": 298, "aarch64": 241}


def kernel_dev(st_dev: int) -> int:
    """stat's st_dev → the kernel's internal dev_t (super_block.s_dev)."""
    return (os.major(st_dev) << 20) | os.minor(st_dev)


def exe_identity(path: str) -> tuple[int, int]:
    """(kernel dev_t, inode) of an executable, following links (/proc/PID/exe)."""
    st = os.stat(path)
    return kernel_dev(st.st_dev), st.st_ino


def format_offsets(tracepoint: str) -> dict[str, int]:
    """{field: offset in the record} from a tracepoint's format file."""
    return {m[1]: int(m[2]) for m in _FIELD.finditer(_tracefs_read(tracepoint, "format"))}


def _tracefs_read(tracepoint: str, name: str) -> str:
    """A tracepoint's `format` or `id` file from the first tracefs mount that has it."""
    for root in TRACEFS:
        try:
            with open(f"{root}/events/{tracepoint}/{name}") as f:
                return f.read()
        except FileNotFoundError:
            continue
    raise KernelError(f"tracepoint {tracepoint} has no {name} file under {' or '.join(TRACEFS)}; "
                      "mount tracefs (mount -t tracefs tracefs /sys/kernel/tracing)")


def contain_cflags() -> tuple[dict[str, int], list[str]]:
    """The -D values containment needs from this kernel, and one note per
    part that is off and why (nothing else is turned off with it)."""
    flags: dict[str, int] = {}
    notes = []
    try:
        flags.update(offsets(CONTAIN_OFFSETS))
    except (BTFError, OSError) as e:
        notes.append(f"containment by executable is off ({e}); containment by process still works")
    try:
        fork, exit_ = format_offsets(CONTAIN_TRACEPOINTS["ns_contain_fork"]), \
            format_offsets(CONTAIN_TRACEPOINTS["ns_contain_exit"])
        flags["NS_TP_FORK_CHILD_PID"] = fork["child_pid"]
        if "group_dead" in exit_:
            flags["NS_TP_EXIT_GROUP_DEAD"] = exit_["group_dead"]
    except (KernelError, KeyError, OSError) as e:
        notes.append(f"children of a contained process are not followed ({e}); contain them by "
                     "executable or one by one")
    return flags, notes


def _tracepoint_id(tracepoint: str) -> int:
    return int(_tracefs_read(tracepoint, "id"))


def perf_tracepoint_link(prog_fd: int, tracepoint: str) -> int:
    """A BPF link of prog_fd on a tracepoint (perf_event_open on CPU 0: a
    tracepoint's BPF program runs on every CPU whatever the event's CPU).
    Pinnable, unlike BCC's attach_tracepoint."""
    nr = _PERF_EVENT_OPEN.get(platform.machine())
    if nr is None:
        raise KernelError(f"perf_event_open's number on {platform.machine()} is not known here")
    attr = (ctypes.c_uint64 * 16)()   # struct perf_event_attr, PERF_ATTR_SIZE_VER0 head used
    attr[0] = PERF_TYPE_TRACEPOINT | (64 << 32)   # type, size
    attr[1] = _tracepoint_id(tracepoint)           # config
    attr[2] = 1                                    # sample_period
    libc = ctypes.CDLL(None, use_errno=True)
    pfd = libc.syscall(nr, ctypes.byref(attr), -1, 0, -1, PERF_FLAG_FD_CLOEXEC)
    if pfd < 0:
        err = ctypes.get_errno()
        raise KernelError(f"perf_event_open on {tracepoint}: {os.strerror(err)}")
    try:
        fcntl.ioctl(pfd, PERF_EVENT_IOC_ENABLE, 0)
        return link_create(prog_fd, pfd, ATTACH_PERF_EVENT)
    finally:
        os.close(pfd)   # the link holds the event


@dataclass
class Contained:
    """One kernel entry: expiry (Unix time, None = never) and counters."""
    expires_at: float | None
    blocked: int
    last_blocked_at: float | None
    origin: int
    inherited: bool


class ContainMaps:
    bpf = None
    bcc = None
    pins = None
    warn: Callable[[str], None]
    _contain_flags: tuple[dict[str, int], list[str]] | None = None

    def contain_flags(self) -> tuple[dict[str, int], list[str]]:
        """contain_cflags(), worked out once per Enforcer (BTF is read once)."""
        if self._contain_flags is None:
            self._contain_flags = contain_cflags()
        return self._contain_flags

    # ---- entries
    @staticmethod
    def _put(t, k, expires_at: float | None, origin: int, inherited: bool = False) -> None:
        try:
            leaf = t[k]   # already there: keep its counters
        except KeyError:
            leaf = t.Leaf()
        leaf.expires_ns, leaf.origin = epoch_to_boottime(expires_at), origin
        leaf.inherited = int(inherited)
        try:
            t[k] = leaf
        except Exception as e:
            raise KernelError(f"cannot add to the containment map (full?): {e}") from e

    def _exe_key(self, dev: int, ino: int):
        t = self.bpf["contain_exes"]
        k = t.Key()
        k.dev, k.ino = dev, ino
        return t, k

    def contain_pid(self, tgid: int, expires_at: float | None, origin: int = 0) -> None:
        """origin: the contained process tgid descends from (itself when 0)."""
        t = self.bpf["contain_pids"]
        self._put(t, t.Key(tgid), expires_at, origin or tgid, bool(origin and origin != tgid))

    def contain_exe(self, dev: int, ino: int, expires_at: float | None, origin: int = 0) -> None:
        t, k = self._exe_key(dev, ino)
        self._put(t, k, expires_at, origin)

    def contain_sock(self, cookie: int, expires_at: float | None, origin: int) -> None:
        t = self.bpf["contain_socks"]
        self._put(t, t.Key(cookie), expires_at, origin)

    @staticmethod
    def _delete(t, k) -> bool:
        try:
            del t[k]
            return True
        except KeyError:
            return False

    def release_sock(self, cookie: int) -> bool:
        t = self.bpf["contain_socks"]
        return self._delete(t, t.Key(cookie))

    def contained_socks(self) -> dict[int, Contained]:
        return {int(k.value): self._entry(v) for k, v in self.bpf["contain_socks"].items()}

    def release_pid(self, tgid: int) -> bool:
        t = self.bpf["contain_pids"]
        return self._delete(t, t.Key(tgid))

    def release_exe(self, dev: int, ino: int) -> bool:
        return self._delete(*self._exe_key(dev, ino))

    @staticmethod
    def _entry(v) -> Contained:
        exp = None
        if v.expires_ns:   # CLOCK_BOOTTIME ns → Unix time
            exp = time.time() + (v.expires_ns - time.clock_gettime_ns(time.CLOCK_BOOTTIME)) / 1e9
        return Contained(exp, int(v.blocked), ktime_to_epoch(v.last_blocked_ns), int(v.origin),
                         bool(v.inherited))

    def contained_pids(self) -> dict[int, Contained]:
        return {int(k.value): self._entry(v) for k, v in self.bpf["contain_pids"].items()}

    def contained_exes(self) -> dict[tuple[int, int], Contained]:
        return {(int(k.dev), int(k.ino)): self._entry(v) for k, v in self.bpf["contain_exes"].items()}

    # ---- attaching (called by Enforcer.attach with the cgroup links)
    def _attach_contain(self, changed: bool) -> None:
        for note in self.contain_flags()[1]:
            self.warn(note)
        hooks = ((ENFORCER_SOCK_CREATE, ENFORCER_SOCK_CREATE, self.bcc.BPF.CGROUP_SOCK,
                  ATTACH_CGROUP_INET_SOCK_CREATE, {"attach_type": ATTACH_CGROUP_INET_SOCK_CREATE}),
                 *((link, CONTAIN_SKB_PROG, self.bcc.BPF.CGROUP_SKB, attach, {})   # one program, two hooks
                   for link, attach in zip(CONTAIN_SKB_LINKS, (ATTACH_CGROUP_INET_EGRESS,
                                                                ATTACH_CGROUP_INET_INGRESS))))
        for name, prog, prog_type, attach, kw in hooks:
            if self._adopt(name, prog, prog_type, changed, **kw):
                continue
            fn = self.bpf.load_func(prog.encode(), prog_type, **kw)
            cg_fd = os.open(ensure_cgroup2_root(), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                self._pin(name, link_create(fn.fd, cg_fd, attach))
            except OSError as e:
                raise KernelError(f"cannot attach {name} to the cgroup2 root: {e.strerror}") from e
            finally:
                os.close(cg_fd)
        if "NS_TP_FORK_CHILD_PID" not in self.contain_flags()[0]:
            return   # compiled out: contain_cflags() said why
        for name, tracepoint in CONTAIN_TRACEPOINTS.items():
            self._attach_tracepoint(name, tracepoint, changed)

    def _attach_tracepoint(self, name: str, tracepoint: str, changed: bool) -> None:
        """A perf_event link cannot swap its program: a changed program gets
        a new link, pinned in place of the old one (running both a moment is
        harmless: the handlers are idempotent)."""
        old = self.pins.open_link(name) if self.pins else None
        if old is not None and not changed:
            self._links[name] = old
            self.adopted.append(name)
            return
        fn = self.bpf.load_func(name.encode(), self.bcc.BPF.TRACEPOINT)
        fd = perf_tracepoint_link(fn.fd, tracepoint)
        if old is not None:
            try:
                link_detach(old)
            except OSError as e:
                if e.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
                    raise
            os.close(old)
            os.unlink(self.pins.link_path(name))
            self.adopted.append(name)
            self.replaced.append(name)
        self._links[name] = fd
        if self.pins:
            obj_pin(fd, self.pins.link_path(name))
