"""The libbpf calls BCC 0.26 does not wrap: BPF links and program ids (ctypes)."""

from __future__ import annotations

import ctypes
import ctypes.util
import os

from . import KernelError

# enum bpf_attach_type (include/uapi/linux/bpf.h)
ATTACH_CGROUP_INET4_CONNECT = 10
ATTACH_CGROUP_INET6_CONNECT = 11
ATTACH_CGROUP_UDP4_SENDMSG = 14
ATTACH_CGROUP_UDP6_SENDMSG = 15
ATTACH_XDP = 37
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
        _libbpf = lib
    return _libbpf


def link_create(prog_fd: int, target_fd: int, attach_type: int, flags: int = 0) -> int:
    opts = _LinkCreateOpts(ctypes.sizeof(_LinkCreateOpts), flags, 0)
    fd = _lib().bpf_link_create(prog_fd, target_fd, attach_type, ctypes.byref(opts))
    if fd < 0:
        err = -fd if fd < -1 else ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return fd


def link_destroy(fd: int) -> None:
    """Detach now (even if a child inherited the fd) and close."""
    try:
        _lib().bpf_link_detach(fd)
    finally:
        try:
            os.close(fd)
        except OSError:
            pass


def prog_id(fd: int) -> int | None:
    """The kernel's id of a loaded program (what bpftool shows), from its fd."""
    info = (ctypes.c_uint32 * 2)()   # struct bpf_prog_info starts {type, id}
    size = ctypes.c_uint32(ctypes.sizeof(info))
    if _lib().bpf_obj_get_info_by_fd(fd, info, ctypes.byref(size)) != 0:
        return None
    return int(info[1])


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
