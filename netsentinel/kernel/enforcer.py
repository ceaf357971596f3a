"""The enforcer: bpf/enforce.bpf.c. XDP ingress filter on one interface
(native mode, falling back to generic with a message) and cgroup
connect/sendmsg hooks at the cgroup2 root, sharing the bans4/bans6 LPM tries;
filter rules and per-source statistics live in the same object."""

from __future__ import annotations

import ctypes
import errno
import ipaddress
import os
import socket
import time
from dataclasses import dataclass
from typing import Callable

from ..addresses import Network
from . import KernelError
from .host import cflags, ensure_cgroup2_root, import_bcc, program_source
from .libbpf import (ATTACH_CGROUP_INET4_CONNECT, ATTACH_CGROUP_INET6_CONNECT,
                     ATTACH_CGROUP_UDP4_SENDMSG, ATTACH_CGROUP_UDP6_SENDMSG, ATTACH_XDP,
                     XDP_FLAGS_DRV_MODE, XDP_FLAGS_SKB_MODE, link_create, link_destroy)

CGROUP_HOOKS = (
    ("ns_connect4", ATTACH_CGROUP_INET4_CONNECT),
    ("ns_connect6", ATTACH_CGROUP_INET6_CONNECT),
    ("ns_sendmsg4", ATTACH_CGROUP_UDP4_SENDMSG),
    ("ns_sendmsg6", ATTACH_CGROUP_UDP6_SENDMSG),
)
# Where the loader mounts its own cgroup2 view when none is visible (for
# example inside `ip netns exec`, which remounts /sys).


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
        return program_source("enforce.bpf.c"), cflags(self.max_bans)

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
