"""Kernel struct member offsets from the running kernel's BTF.

The stack programs read a few sk_buff/net_device fields that no tracepoint
carries (an skb's device and headers). Their offsets differ between kernel
builds, so they come from /sys/kernel/btf/vmlinux of *this* kernel (through
`bpftool btf dump ... format raw`), never from headers. Without BTF or
bpftool the caller turns the feature off and says why.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import threading
from pathlib import Path

VMLINUX_BTF = Path("/sys/kernel/btf/vmlinux")

_TYPE = re.compile(r"^\[(\d+)\] (\w+) '([^']*)'(?: .*?type_id=(\d+))?")
_MEMBER = re.compile(r"^\s+'([^']*)' type_id=(\d+) bits_offset=(\d+)(?: bitfield_size=(\d+))?")


class BTFError(Exception):
    """BTF is missing or lacks a member we need; the message says which."""


class BTF:
    def __init__(self, text: str):
        # id -> (kind, name, ref type id or None, [(member, type_id, bits, bitfield)])
        self.types: dict[int, tuple[str, str, int | None, list]] = {}
        self.by_name: dict[tuple[str, str], int] = {}
        current = None
        for line in text.splitlines():
            m = _TYPE.match(line)
            if m:
                tid, kind, name = int(m[1]), m[2], m[3]
                current = (kind, name, int(m[4]) if m[4] else None, [])
                self.types[tid] = current
                if kind in ("STRUCT", "UNION") and name != "(anon)":
                    self.by_name.setdefault((kind, name), tid)
                continue
            m = _MEMBER.match(line)
            if m and current is not None:
                current[3].append((m[1], int(m[2]), int(m[3]), m[4]))

    @classmethod
    def load(cls, path: Path = VMLINUX_BTF) -> "BTF":
        if not path.exists():
            raise BTFError(f"{path} is missing (kernel built without CONFIG_DEBUG_INFO_BTF)")
        tool = shutil.which("bpftool") or next(
            (p for p in ("/usr/sbin/bpftool", "/sbin/bpftool") if Path(p).exists()), None)
        if tool is None:
            raise BTFError("bpftool is not installed: install the Debian package bpftool")
        r = subprocess.run([tool, "btf", "dump", "file", str(path), "format", "raw"],
                           capture_output=True, text=True, timeout=60)
        if r.returncode != 0:
            raise BTFError(f"bpftool could not read {path}: {r.stderr.strip()[:200]}")
        return cls(r.stdout)

    def _strip(self, tid: int) -> int:
        """Follow typedef/const/volatile to the underlying type."""
        while tid in self.types and self.types[tid][0] in ("TYPEDEF", "CONST", "VOLATILE", "RESTRICT"):
            tid = self.types[tid][2]
        return tid

    def _find(self, tid: int, member: str) -> tuple[int, int] | None:
        """(byte offset, member type id) of `member`, looking through anonymous
        structs/unions the way C does."""
        for name, mtid, bits, bitfield in self.types[tid][3]:
            if name == member:
                if bitfield or bits % 8:
                    raise BTFError(f"{member} is a bit-field: cannot be read by offset")
                return bits // 8, mtid
            if name == "(anon)":
                inner = self._strip(mtid)
                if self.types.get(inner, ("",))[0] in ("STRUCT", "UNION"):
                    found = self._find(inner, member)
                    if found:
                        return bits // 8 + found[0], found[1]
        return None

    def offset(self, struct: str, path: str) -> int:
        """Byte offset of a dotted member path, e.g. offset("net", "ns.inum")."""
        tid = self.by_name.get(("STRUCT", struct))
        if tid is None:
            raise BTFError(f"struct {struct} is not in this kernel's BTF")
        total = 0
        for part in path.split("."):
            found = self._find(tid, part)
            if found is None:
                raise BTFError(f"struct {struct} has no member {path} in this kernel's BTF")
            total += found[0]
            tid = self._strip(found[1])
        return total


# -D name -> (struct, member path): what bpf/stack.bpf.c reads.
STACK_OFFSETS = {
    "NS_SKB_DEV": ("sk_buff", "dev"),
    "NS_SKB_HEAD": ("sk_buff", "head"),
    "NS_SKB_NETWORK_HEADER": ("sk_buff", "network_header"),
    "NS_DEV_IFINDEX": ("net_device", "ifindex"),
    "NS_DEV_ND_NET": ("net_device", "nd_net.net"),
    "NS_NET_INUM": ("net", "ns.inum"),
    "NS_SK_NET": ("sock", "__sk_common.skc_net.net"),   # a TCP connection's namespace
}


# -D name -> (struct, member path): the executable identity of the current
# task, read by bpf/enforce.bpf.c's containment (current->mm->exe_file->f_inode).
CONTAIN_OFFSETS = {
    "NS_OFF_TASK_MM": ("task_struct", "mm"),
    "NS_OFF_MM_EXE_FILE": ("mm_struct", "exe_file"),
    "NS_OFF_FILE_INODE": ("file", "f_inode"),
    "NS_OFF_INODE_INO": ("inode", "i_ino"),
    "NS_OFF_INODE_SB": ("inode", "i_sb"),
    "NS_OFF_SB_DEV": ("super_block", "s_dev"),
}


# The connecting process's start, read by bpf/conn_monitor.bpf.c
# (current->group_leader->start_boottime: /proc/PID/stat's starttime).
CONN_OFFSETS = {
    "NS_OFF_TASK_GROUP_LEADER": ("task_struct", "group_leader"),
    "NS_OFF_TASK_START_BOOTTIME": ("task_struct", "start_boottime"),
}


# What the accept() hook follows to the accepted socket:
# current->files->fdt->fd[ret]->private_data (a struct socket) ->sk.
ACCEPT_OFFSETS = {
    "NS_TASK_FILES": ("task_struct", "files"),
    "NS_FILES_FDT": ("files_struct", "fdt"),
    "NS_FDT_MAX_FDS": ("fdtable", "max_fds"),
    "NS_FDT_FD": ("fdtable", "fd"),
    "NS_FILE_PRIVATE_DATA": ("file", "private_data"),
    "NS_SOCKET_SK": ("socket", "sk"),
}

# The path hooks read an skb's protocol and data pointer (at net:netif_receive_skb the
# network header is not set yet; data points at it).
PATH_OFFSETS = {"NS_SKB_DATA": ("sk_buff", "data"), "NS_SKB_PROTOCOL": ("sk_buff", "protocol")}


# What the full-queue count reads of the socket a dropped packet was meant
# for (kfree_skb's rx_sk) and of the skb: the figures sock:sock_rcvqueue_full
# carries, and the socket's owner (uid, inode).
RCVQ_OFFSETS = {
    "NS_SK_UID": ("sock", "sk_uid"),
    "NS_SK_SOCKET": ("sock", "sk_socket"),
    "NS_SK_RCVBUF": ("sock", "sk_rcvbuf"),
    "NS_SK_RMEM_ALLOC": ("sock", "sk_backlog.rmem_alloc"),
    "NS_SKB_TRUESIZE": ("sk_buff", "truesize"),
}


# From a struct socket to its inode number (the socket and its inode are
# allocated together, in a struct socket_alloc): the first two subtracted.
SOCKET_INODE = (("socket_alloc", "vfs_inode"), ("socket_alloc", "socket"), ("inode", "i_ino"))


def rcvq_offsets(btf: BTF | None = None) -> dict[str, int]:
    """RCVQ_OFFSETS, plus NS_SOCKET_INODE_INO (SOCKET_INODE)."""
    out = offsets(RCVQ_OFFSETS, btf)
    inode, sock, ino = (_offset(btf, *key) for key in SOCKET_INODE)
    out["NS_SOCKET_INODE_INO"] = inode - sock + ino
    return out


# Every (struct, member path) a program here reads, looked up in one parse
# of the kernel's BTF (bpftool's dump of vmlinux parsed: 1-2 s and about
# 100 MB while it lasts) and kept as numbers: the loader's stack,
# containment and connection programs each asked for a parse of their own.
_ALL = [*STACK_OFFSETS.values(), *CONTAIN_OFFSETS.values(), *CONN_OFFSETS.values(),
        *ACCEPT_OFFSETS.values(), *PATH_OFFSETS.values(), *RCVQ_OFFSETS.values(), *SOCKET_INODE]
_known: dict[tuple[str, str], int | str] | None = None   # offset, or why there is none
_known_lock = threading.Lock()


def _offset(btf: BTF | None, struct: str, path: str) -> int:
    """One offset: from btf when given, else from the one parse (BTFError
    with the reason when this kernel lacks it)."""
    global _known
    if btf is not None:
        return btf.offset(struct, path)
    with _known_lock:
        if _known is None or (struct, path) not in _known:
            parsed = BTF.load()   # a BTFError here is not kept: the next ask tries again
            known = {}
            for key in {*_ALL, (struct, path)}:
                try:
                    known[key] = parsed.offset(*key)
                except BTFError as e:
                    known[key] = str(e)
            _known = {**(_known or {}), **known}
        found = _known[(struct, path)]
    if isinstance(found, str):
        raise BTFError(found)
    return found


def offsets(table: dict[str, tuple[str, str]], btf: BTF | None = None) -> dict[str, int]:
    """{-D name: offset} for a table like CONTAIN_OFFSETS; raises BTFError with the reason."""
    return {name: _offset(btf, struct, path) for name, (struct, path) in table.items()}


def stack_offsets(btf: BTF | None = None) -> dict[str, int]:
    """The -D offsets for the stack program; raises BTFError with the reason."""
    return offsets(STACK_OFFSETS, btf)
