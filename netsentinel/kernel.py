"""Kernel side of the loader: compile, attach and detach the BPF programs.

- ConnectionMonitor: bpf/conn_monitor.c. Tries the kprobe path
  (tcp_v4_connect/tcp_v6_connect) and falls back, out loud, to the
  sock:inet_sock_set_state tracepoint when kprobes are unavailable.
- Enforcer: bpf/enforce.c. XDP ingress filter on one interface (native mode,
  falling back to generic with a message) and cgroup connect/sendmsg hooks
  at the cgroup2 root, sharing the bans4/bans6 LPM tries.

XDP and cgroup programs are attached as BPF links (libbpf's
bpf_link_create): a link belongs to the process that holds its fd, so the
kernel detaches it if the loader dies in any way, SIGKILL included. A clean
exit detaches explicitly, once, and only what this process attached.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import ipaddress
import os
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .addresses import Network
from .paths import BPF_DIR

# enum bpf_attach_type (include/uapi/linux/bpf.h)
ATTACH_CGROUP_INET4_CONNECT = 10
ATTACH_CGROUP_INET6_CONNECT = 11
ATTACH_CGROUP_UDP4_SENDMSG = 14
ATTACH_CGROUP_UDP6_SENDMSG = 15
ATTACH_XDP = 37
XDP_FLAGS_SKB_MODE = 1 << 1
XDP_FLAGS_DRV_MODE = 1 << 2

MODE_NAMES = {1: "kprobe", 2: "tracepoint"}
CGROUP_HOOKS = (
    ("ns_connect4", ATTACH_CGROUP_INET4_CONNECT),
    ("ns_connect6", ATTACH_CGROUP_INET6_CONNECT),
    ("ns_sendmsg4", ATTACH_CGROUP_UDP4_SENDMSG),
    ("ns_sendmsg6", ATTACH_CGROUP_UDP6_SENDMSG),
)
# Where the loader mounts its own cgroup2 view when none is visible (for
# example inside `ip netns exec`, which remounts /sys).
PRIVATE_CGROUP2 = Path("/run/netsentinel/cgroup2")


class KernelError(RuntimeError):
    """A kernel feature could not be used; the message says what to do."""


KERNEL_FS = (("tracefs", "/sys/kernel/tracing"), ("debugfs", "/sys/kernel/debug"),
             ("bpf", "/sys/fs/bpf"))


def ensure_kernel_fs() -> None:
    """Mount tracefs/debugfs/bpffs where missing. BCC finds tracefs when it is
    imported, and `ip netns exec` gives us a fresh /sys without them."""
    for fstype, where in KERNEL_FS:
        if os.path.isdir(where) and not os.path.ismount(where):
            subprocess.run(["mount", "-t", fstype, fstype, where], capture_output=True)


def import_bcc():
    ensure_kernel_fs()
    try:
        import bcc  # noqa: F401  (Debian's python3-bpfcc, seen through the venv)
    except ImportError as e:
        raise KernelError("the bcc Python module is missing: run `sudo make install` "
                          "(installs Debian's python3-bpfcc) and use .venv/bin/python") from e
    return bcc


def cflags(max_bans: int, extra: dict[str, int] | None = None) -> list[str]:
    """-D flags from validated integers only (never pasted user strings)."""
    values = {"NS_MAX_BANS": max_bans, **(extra or {})}
    out = ["-Wno-ignored-attributes", f"-I{BPF_DIR}"]
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{name} must be an integer, got {value!r}")
        out.append(f"-D{name}={value}")
    return out


def program_source(name: str) -> str:
    return (BPF_DIR / name).read_text()


# ----------------------------------------------------------------- libbpf links
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


# ---------------------------------------------------------------- cgroup2 root
def find_cgroup2_root() -> str | None:
    """The first cgroup2 mount this process can see."""
    try:
        with open("/proc/self/mounts") as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 3 and parts[2] == "cgroup2":
                    return parts[1].replace("\\040", " ")
    except OSError:
        return None
    return None


def ensure_cgroup2_root() -> str:
    root = find_cgroup2_root()
    if root:
        return root
    PRIVATE_CGROUP2.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(["mount", "-t", "cgroup2", "none", str(PRIVATE_CGROUP2)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise KernelError(f"no cgroup2 hierarchy is mounted and mounting one at {PRIVATE_CGROUP2} "
                          f"failed: {r.stderr.strip() or r.returncode}")
    return str(PRIVATE_CGROUP2)


# -------------------------------------------------------------- connection monitor
def kprobes_unavailable_reason() -> str | None:
    """Why kprobes cannot work on this kernel, or None if they might."""
    pmu = Path("/sys/bus/event_source/devices/kprobe")
    events = [Path("/sys/kernel/tracing/kprobe_events"), Path("/sys/kernel/debug/tracing/kprobe_events")]
    if not pmu.exists() and not any(p.exists() for p in events):
        return "this kernel has no kprobe support (CONFIG_KPROBES is off)"
    return None


def _addr(family: int, raw: bytes) -> tuple[str, str]:
    """(family name, address text); v4-mapped IPv6 is reported as IPv4."""
    if family == socket.AF_INET:
        return "ipv4", str(ipaddress.IPv4Address(bytes(raw[:4])))
    a = ipaddress.IPv6Address(bytes(raw[:16]))
    if a.ipv4_mapped is not None:
        return "ipv4", str(a.ipv4_mapped)
    return "ipv6", str(a)


@dataclass
class RawConnection:
    ts_ns: int
    pid: int
    tid: int
    uid: int
    comm: str
    family: str
    saddr: str | None
    sport: int | None
    daddr: str
    dport: int
    mode: str


class ConnectionMonitor:
    """Outbound TCP connection events from the kernel, via a perf buffer."""

    def __init__(self, capture: str = "auto", page_cnt: int = 64,
                 warn: Callable[[str], None] = print):
        if capture not in ("auto", "kprobe", "tracepoint"):
            raise ValueError("capture must be auto, kprobe or tracepoint")
        self.capture = capture
        self.page_cnt = page_cnt
        self.warn = warn
        self.bpf = None
        self.mode: str | None = None
        self.fallback_reason: str | None = None

    def source_and_flags(self, mode: str) -> tuple[str, list[str]]:
        flags = cflags(1)
        if mode == "kprobe":
            flags.append("-DNS_CAPTURE_KPROBE=1")
        return program_source("conn_monitor.c"), flags

    def start(self, on_event: Callable[[RawConnection], None], on_lost: Callable[[int], None]) -> str:
        bcc = import_bcc()
        if self.capture in ("auto", "kprobe"):
            reason = kprobes_unavailable_reason()
            if reason is None:
                try:
                    self._load_kprobe(bcc)
                except Exception as e:  # BCC raises plain Exception on attach failure
                    reason = f"kprobe attach failed: {str(e).splitlines()[0]}"
                    self._cleanup_bpf()
            if self.mode is None:
                if self.capture == "kprobe":
                    raise KernelError(f"--capture kprobe: {reason}")
                self.fallback_reason = reason
        if self.mode is None:
            if not bcc.BPF.tracepoint_exists("sock", "inet_sock_set_state"):
                raise KernelError("neither kprobes nor the sock:inet_sock_set_state tracepoint "
                                  "is available: cannot monitor connections on this kernel")
            src, flags = self.source_and_flags("tracepoint")
            self.bpf = bcc.BPF(text=src, cflags=flags)  # TRACEPOINT_PROBE attaches itself
            self.mode = "tracepoint"

        def handle(cpu, data, size):
            e = self.bpf["conn_events"].event(data)
            family, daddr = _addr(e.family, bytes(e.daddr))
            saddr = _addr(e.family, bytes(e.saddr))[1] if e.has_saddr else None
            on_event(RawConnection(
                ts_ns=e.ts_ns, pid=e.pid, tid=e.tid, uid=e.uid,
                comm=e.comm.decode("utf-8", "replace"), family=family,
                # SYN_SENT is set before the source port is picked: 0 means unknown.
                saddr=saddr, sport=e.sport or None,
                daddr=daddr, dport=e.dport, mode=MODE_NAMES.get(e.mode, "unknown")))

        self.bpf["conn_events"].open_perf_buffer(handle, page_cnt=self.page_cnt,
                                                 lost_cb=lambda n: on_lost(int(n)))
        return self.mode

    def _load_kprobe(self, bcc) -> None:
        src, flags = self.source_and_flags("kprobe")
        self.bpf = bcc.BPF(text=src, cflags=flags)
        self.bpf.attach_kprobe(event=b"tcp_v4_connect", fn_name=b"ns_kprobe_v4")
        try:
            self.bpf.attach_kprobe(event=b"tcp_v6_connect", fn_name=b"ns_kprobe_v6")
        except Exception as e:
            self.warn(f"IPv6 kprobe unavailable ({str(e).splitlines()[0]}); IPv4 only")
        self.mode = "kprobe"

    def poll(self, timeout_ms: int) -> None:
        self.bpf.perf_buffer_poll(timeout=timeout_ms)

    def _cleanup_bpf(self) -> None:
        if self.bpf is not None:
            try:
                self.bpf.cleanup()
            finally:
                self.bpf = None

    def stop(self) -> None:
        self._cleanup_bpf()


# -------------------------------------------------------------------- enforcer
def ktime_to_epoch(ns: int) -> float | None:
    """bpf_ktime_get_ns() (CLOCK_MONOTONIC) → Unix time; None for 0."""
    if not ns:
        return None
    return time.time() - (time.clock_gettime_ns(time.CLOCK_MONOTONIC) - ns) / 1e9


@dataclass
class BanCounters:
    drops: int = 0
    last_drop_at: float | None = None
    blocked: int = 0
    last_blocked_at: float | None = None


class Enforcer:
    """XDP + cgroup enforcement over one ban set. attach() then add()/remove()."""

    def __init__(self, interface: str | None, *, max_bans: int = 1048576, cgroup: bool = True,
                 xdp_mode: str = "auto", warn: Callable[[str], None] = print):
        if not 1 <= max_bans <= 16 * 1048576:
            raise ValueError("max_bans must be between 1 and 16777216")
        self.interface = interface
        self.max_bans = max_bans
        self.want_cgroup = cgroup
        self.want_xdp_mode = xdp_mode
        self.warn = warn
        self.bpf = None
        self.xdp_mode: str | None = None
        self.cgroup_path: str | None = None
        self._links: list[tuple[str, int]] = []
        self._cgroup_fd: int | None = None
        self._rule_slots: list[tuple[str, int]] = []  # (rule id, hit count at load)

    def source_and_flags(self) -> tuple[str, list[str]]:
        return program_source("enforce.c"), cflags(self.max_bans)

    def attach(self) -> None:
        bcc = import_bcc()
        src, flags = self.source_and_flags()
        self.bpf = bcc.BPF(text=src, cflags=flags)
        try:
            if self.interface:
                self._attach_xdp(bcc)
            if self.want_cgroup:
                self._attach_cgroup(bcc)
        except BaseException:
            self.detach()
            raise

    def _attach_xdp(self, bcc) -> None:
        ifindex = socket.if_nametoindex(self.interface)
        fn = self.bpf.load_func(b"ns_xdp_filter", bcc.BPF.XDP)
        modes = {"auto": ("native", "generic"), "native": ("native",), "generic": ("generic",)}
        errors = []
        for mode in modes[self.want_xdp_mode]:
            flag = XDP_FLAGS_DRV_MODE if mode == "native" else XDP_FLAGS_SKB_MODE
            try:
                fd = link_create(fn.fd, ifindex, ATTACH_XDP, flag)
            except OSError as e:
                if e.errno in (errno.EBUSY, errno.EEXIST):
                    raise KernelError(
                        f"{self.interface} already has an XDP program attached; remove it "
                        f"(`ip link set dev {self.interface} xdp off`) or run with --no-xdp") from e
                errors.append(f"{mode}: {e.strerror}")
                continue
            self._links.append((f"xdp:{self.interface}", fd))
            self.xdp_mode = mode
            if errors:
                self.warn(f"native XDP is not supported on {self.interface} ({errors[0]}); "
                          "using generic (skb) mode, which is slower")
            return
        raise KernelError(f"cannot attach XDP to {self.interface}: " + "; ".join(errors))

    def _attach_cgroup(self, bcc) -> None:
        root = ensure_cgroup2_root()
        self._cgroup_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        for name, attach_type in CGROUP_HOOKS:
            fn = self.bpf.load_func(name.encode(), bcc.BPF.CGROUP_SOCK_ADDR, attach_type=attach_type)
            try:
                fd = link_create(fn.fd, self._cgroup_fd, attach_type)
            except OSError as e:
                raise KernelError(f"cannot attach {name} to cgroup2 root {root}: {e.strerror}") from e
            self._links.append((f"cgroup:{name}", fd))
        self.cgroup_path = root

    def detach(self) -> None:
        """Idempotent: detaches each link this object created, once."""
        while self._links:
            _, fd = self._links.pop()
            link_destroy(fd)
        if self._cgroup_fd is not None:
            os.close(self._cgroup_fd)
            self._cgroup_fd = None
        if self.bpf is not None:
            bpf, self.bpf = self.bpf, None
            bpf.cleanup()

    # ---- the ban set
    def _table_and_key(self, net: Network):
        if net.version == 4:
            t = self.bpf["bans4"]
            return t, t.Key(net.prefixlen, int.from_bytes(net.network_address.packed, "little"))
        t = self.bpf["bans6"]
        k = t.Key()
        k.prefixlen = net.prefixlen
        ctypes.memmove(k.addr, net.network_address.packed, 16)
        return t, k

    def add(self, net: Network) -> None:
        t, k = self._table_and_key(net)
        if k in t:
            return  # keep its counters
        try:
            t[k] = t.Leaf()
        except Exception as e:
            raise KernelError(f"cannot add {net} to the ban map (full at {self.max_bans}?): {e}") from e

    def remove(self, net: Network) -> bool:
        t, k = self._table_and_key(net)
        try:
            del t[k]
            return True
        except KeyError:
            return False

    def counters(self, net: Network) -> BanCounters | None:
        t, k = self._table_and_key(net)
        try:
            v = t[k]
        except KeyError:
            return None
        return BanCounters(v.drops, ktime_to_epoch(v.last_drop_ns), v.blocked,
                           ktime_to_epoch(v.last_blocked_ns))

    def totals(self) -> dict[str, int]:
        names = ("xdp_seen", "xdp_drops", "connect_blocked", "sendmsg_blocked", "rule_drops")
        t = self.bpf["counters"]
        return {name: int(sum(t[t.Key(i)])) for i, name in enumerate(names)}

    def attached(self) -> list[str]:
        return [name for name, _ in self._links]

    # ---- filter rules (see netsentinel/filterrules.py)
    def set_rules(self, rules: list) -> None:
        """Load validated FilterRules into slots [0, n). Matching is switched
        off (count 0) while slots are rewritten, so no packet ever sees a
        half-written rule set; hit counters are rebased per slot."""
        table, count, hits = self.bpf["rules"], self.bpf["rule_count"], self.bpf["rule_hits"]
        count[count.Key(0)] = ctypes.c_uint(0)
        for i in range(len(rules), len(self._rule_slots)):
            table[table.Key(i)] = table.Leaf()
        for i, rule in enumerate(rules):
            leaf = table.Leaf()
            leaf.action = 1 if rule.action == "drop" else 2
            leaf.family = rule.family
            leaf.proto = rule.proto
            leaf.tcp_flags_mask, leaf.tcp_flags_value = rule.flags_mask, rule.flags_value
            leaf.icmp_type_set = int(rule.icmp_type is not None)
            leaf.icmp_type = rule.icmp_type or 0
            leaf.sport_min, leaf.sport_max = rule.sport
            leaf.dport_min, leaf.dport_max = rule.dport
            if rule.src is not None:
                src = rule.src.network_address.packed
                mask = rule.src.netmask.packed
                ctypes.memmove(leaf.src, src, len(src))
                ctypes.memmove(leaf.mask, mask, len(mask))
            table[table.Key(i)] = leaf
        self._rule_slots = [(r.id, int(sum(hits[hits.Key(i)]))) for i, r in enumerate(rules)]
        count[count.Key(0)] = ctypes.c_uint(len(rules))

    def rule_hits(self) -> dict[str, int]:
        hits = self.bpf["rule_hits"]
        return {rid: int(sum(hits[hits.Key(i)])) - base for i, (rid, base) in enumerate(self._rule_slots)}

    # ---- per-source statistics
    def read_flows(self) -> dict[str, dict]:
        """Per-source totals summed over CPUs: {address: {field: value}}.
        Also closes the destination-port window: `dport_bits` is the OR of
        the ports seen since the previous call."""
        epoch = self.bpf["flow_epoch"]
        e = int(epoch[epoch.Key(0)].value)
        epoch[epoch.Key(0)] = ctypes.c_ulonglong(e + 1)   # the kernel starts the next window
        slot = e & 1
        out = {}
        for k, per_cpu in self.bpf["flows"].items():
            raw = bytes(k.addr)
            addr = str(ipaddress.ip_address(raw[:4] if k.family == 4 else raw))
            agg: dict = {"dport_bits": 0}
            for v in per_cpu:
                if v.dport_epoch[slot] == e:
                    agg["dport_bits"] |= v.dport_bits[slot]
                for name, _ in v._fields_:
                    if name.startswith("dport_"):
                        continue
                    x = getattr(v, name)
                    if name == "first_seen_ns":
                        if x and (not agg.get(name) or x < agg[name]):
                            agg[name] = x
                    elif name == "last_seen_ns":
                        agg[name] = max(agg.get(name, 0), x)
                    else:
                        agg[name] = agg.get(name, 0) + x
            agg["family"] = "ipv4" if k.family == 4 else "ipv6"
            out[addr] = agg
        return out
