"""The libbpf calls BCC 0.26 does not wrap (ctypes): BPF links (create,
update, detach), pinning objects in bpffs, and object info (ids, sizes)."""

from __future__ import annotations

import ctypes
import ctypes.util
import os

from . import KernelError

# enum bpf_attach_type (include/uapi/linux/bpf.h)
ATTACH_CGROUP_INET_INGRESS = 0
ATTACH_CGROUP_INET_EGRESS = 1
ATTACH_CGROUP_INET_SOCK_CREATE = 2
ATTACH_CGROUP_INET4_CONNECT = 10
ATTACH_CGROUP_INET6_CONNECT = 11
ATTACH_CGROUP_UDP4_SENDMSG = 14
ATTACH_CGROUP_UDP6_SENDMSG = 15
ATTACH_XDP = 37
ATTACH_PERF_EVENT = 41    # a tracepoint's perf event behind a BPF link (Linux 5.15+)
ATTACH_TCX_INGRESS = 46   # Linux 6.6+
XDP_FLAGS_SKB_MODE = 1 << 1
XDP_FLAGS_DRV_MODE = 1 << 2


class _LinkCreateOpts(ctypes.Structure):
    # The head of struct bpf_link_create_opts; libbpf accepts a shorter
    # struct as long as sz says how long it is.
    _fields_ = [("sz", ctypes.c_size_t), ("flags", ctypes.c_uint32), ("_pad", ctypes.c_uint32)]


_libbpf = None


def _lib():
    global _libbpf
    if _libbpf is None:
        name = ctypes.util.find_library("bpf") or "libbpf.so.1"
        try:
            lib = ctypes.CDLL(name, use_errno=True)
        except OSError as e:
            raise KernelError(f"cannot load libbpf ({name}): {e}; install Debian's libbpf1") from e
        lib.bpf_link_create.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int,
                                        ctypes.POINTER(_LinkCreateOpts)]
        lib.bpf_link_create.restype = ctypes.c_int
        lib.bpf_link_detach.argtypes = [ctypes.c_int]
        lib.bpf_link_detach.restype = ctypes.c_int
        lib.bpf_obj_get_info_by_fd.argtypes = [ctypes.c_int, ctypes.c_void_p,
                                               ctypes.POINTER(ctypes.c_uint32)]
        lib.bpf_obj_get_info_by_fd.restype = ctypes.c_int
        lib.bpf_link_update.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_void_p]
        lib.bpf_link_update.restype = ctypes.c_int
        lib.bpf_obj_pin.argtypes = [ctypes.c_int, ctypes.c_char_p]
        lib.bpf_obj_pin.restype = ctypes.c_int
        lib.bpf_obj_get.argtypes = [ctypes.c_char_p]
        lib.bpf_obj_get.restype = ctypes.c_int
        u32p = ctypes.POINTER(ctypes.c_uint32)
        lib.bpf_prog_query.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_uint32, u32p, u32p, u32p]
        lib.bpf_prog_query.restype = ctypes.c_int
        _libbpf = lib
    return _libbpf


def _check(ret: int, what: str = "") -> int:
    """libbpf returns -errno (or -1 with errno set) on failure."""
    if ret < 0:
        err = -ret if ret < -1 else ctypes.get_errno()
        raise OSError(err, os.strerror(err), what or None)
    return ret


def link_create(prog_fd: int, target_fd: int, attach_type: int, flags: int = 0) -> int:
    opts = _LinkCreateOpts(ctypes.sizeof(_LinkCreateOpts), flags, 0)
    return _check(_lib().bpf_link_create(prog_fd, target_fd, attach_type, ctypes.byref(opts)))


def link_update(link_fd: int, new_prog_fd: int) -> None:
    """Swap the program behind a link in one step: no packet sees no program."""
    _check(_lib().bpf_link_update(link_fd, new_prog_fd, None))


def link_detach(fd: int) -> None:
    """Detach a link from its hook now (pinned or inherited copies included)."""
    _check(_lib().bpf_link_detach(fd))


def obj_pin(fd: int, path: str) -> None:
    _check(_lib().bpf_obj_pin(fd, path.encode()), path)


def obj_get(path: str) -> int:
    """An fd for a pinned map, program or link (FileNotFoundError if none)."""
    return _check(_lib().bpf_obj_get(path.encode()), path)


def prog_query(target: int, attach_type: int, most: int = 64) -> list[int]:
    """Ids of the programs attached at one hook (for TCX: target is the
    ifindex in the caller's network namespace). What a newer `bpftool net
    show` lists; Debian 12's bpftool 7.1 predates TCX and shows nothing."""
    ids = (ctypes.c_uint32 * most)()
    count, flags = ctypes.c_uint32(most), ctypes.c_uint32(0)
    _check(_lib().bpf_prog_query(target, attach_type, 0, ctypes.byref(flags), ids,
                                 ctypes.byref(count)), "BPF_PROG_QUERY")
    return list(ids[:count.value])


def link_destroy(fd: int) -> None:
    """Detach now (even if a child inherited the fd) and close."""
    try:
        _lib().bpf_link_detach(fd)
    finally:
        try:
            os.close(fd)
        except OSError:
            pass


def _info(fd: int, words: int) -> list[int] | None:
    info = (ctypes.c_uint32 * words)()
    size = ctypes.c_uint32(ctypes.sizeof(info))
    if _lib().bpf_obj_get_info_by_fd(fd, info, ctypes.byref(size)) != 0:
        return None
    return list(info)


def prog_id(fd: int) -> int | None:
    """The kernel's id of a loaded program (what bpftool shows), from its fd."""
    info = _info(fd, 2)   # struct bpf_prog_info starts {type, id}
    return None if info is None else info[1]


def link_info(fd: int) -> dict | None:
    """struct bpf_link_info's head: {type, id, prog_id}, plus the XDP or TCX
    link's ifindex (0 once its device is gone), at offset 16 (the union is
    8-aligned; both unions start with ifindex)."""
    info = _info(fd, 6)
    if info is None:
        return None
    return {"type": info[0], "id": info[1], "prog_id": info[2], "ifindex": info[4]}


def map_info(fd: int) -> dict | None:
    """struct bpf_map_info's head: type, id, key_size, value_size, max_entries, map_flags."""
    info = _info(fd, 6)
    if info is None:
        return None
    return dict(zip(("type", "id", "key_size", "value_size", "max_entries", "map_flags"), info))


def program_ids(bpf) -> dict[str, int]:
    """{function name: program id} for every program a BCC object loaded."""
    if bpf is None:
        return {}
    out = {}
    for name, fn in bpf.funcs.items():
        pid = prog_id(fn.fd)
        if pid is not None:
            out[name.decode() if isinstance(name, bytes) else str(name)] = pid
    return out
