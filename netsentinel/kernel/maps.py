"""The enforcer's maps, as the loader uses them: the ban set (two LPM tries
whose values carry counters and an expiry), the filter-rule slots and the
global counters (the per-source and aggregate statistics: xdpstats.py). A mixin of Enforcer
(kernel/enforcer.py), which owns loading and attaching; self.bpf is the
loaded BCC object, its maps pinned or private."""

from __future__ import annotations

import ctypes
import errno
import ipaddress
import math
import os
import time
from dataclasses import dataclass

from ..abi import (COUNTERS, FAMILY_V4, MAX_RULES, RULE_ACTION, RULE_STATE_ACTIVE,
                   RULE_STATE_COUNT0)
from ..addresses import Network
from . import KernelError

BPF_NOEXIST = 1   # bpf_map_update_elem flag: fail with EEXIST when the key is there


def ktime_to_epoch(ns: int) -> float | None:
    """bpf_ktime_get_ns() or bpf_ktime_get_coarse_ns() (CLOCK_MONOTONIC,
    the coarse one a tick behind at most) → Unix time; None for 0."""
    if not ns:
        return None
    return time.time() - (time.clock_gettime_ns(time.CLOCK_MONOTONIC) - ns) / 1e9


def boottime_offset() -> int:
    """CLOCK_BOOTTIME ns minus Unix time ns, now (read once for a batch)."""
    return time.clock_gettime_ns(time.CLOCK_BOOTTIME) - time.time_ns()


def epoch_to_boottime(t: float | None, offset: int | None = None) -> int:
    """Unix time → CLOCK_BOOTTIME ns for a ban's expires_ns; 0 (never) for
    None or a non-finite value, so an unreadable expiry fails closed."""
    if t is None or not math.isfinite(t):
        return 0
    ns = int(t * 1e9) + (boottime_offset() if offset is None else offset)
    return min(max(ns, 1), 2**64 - 1)


@dataclass
class BanCounters:
    drops: int = 0
    last_drop_at: float | None = None
    blocked: int = 0
    last_blocked_at: float | None = None


class EnforcerMaps:
    bpf = None
    max_bans: int
    _rule_slots: list[tuple[str, int]]
    _rule_base = 0   # first slot of the active rule set

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

    def add(self, net: Network, expires_at: float | None = None) -> None:
        """Ban net until expires_at (Unix time; None: until removed). The
        kernel ignores the entry from then on, loader or no loader."""
        t, k = self._table_and_key(net)
        expires_ns = epoch_to_boottime(expires_at)
        try:
            leaf = t[k]   # already there (a pinned map, or a re-ban): keep its counters
        except KeyError:
            leaf = t.Leaf()
        if leaf.expires_ns == expires_ns and leaf.prefixlen == net.prefixlen:
            return
        leaf.expires_ns, leaf.prefixlen = expires_ns, net.prefixlen
        try:
            t[k] = leaf
        except Exception as e:
            raise KernelError(f"cannot add {net} to the ban map (full at {self.max_bans}?): {e}") from e

    def add_many(self, items: list[tuple[Network, float | None]]) -> list[str | None]:
        """add() for many bans in one loop of bpf(BPF_MAP_UPDATE_ELEM) calls
        (LPM tries have no batch operation): per item None when it is in the
        map, else why not (one line). A new entry goes in with BPF_NOEXIST and
        zeroed counters; one already there goes through add(), which keeps
        its counters."""
        from bcc.libbcc import lib   # only kernel/ imports bcc
        offset = boottime_offset()
        tables = {4: self.bpf["bans4"], 6: self.bpf["bans6"]}
        leaves = {v: t.Leaf() for v, t in tables.items()}
        out: list[str | None] = []
        for net, expires_at in items:
            t, k = self._table_and_key(net)
            leaf = leaves[net.version]
            leaf.expires_ns = epoch_to_boottime(expires_at, offset)
            leaf.prefixlen = net.prefixlen
            if lib.bpf_update_elem(t.map_fd, ctypes.byref(k), ctypes.byref(leaf), BPF_NOEXIST) == 0:
                out.append(None)
                continue
            err = ctypes.get_errno()
            try:
                if err != errno.EEXIST:
                    raise KernelError(f"cannot add {net} to the ban map (full at {self.max_bans}?): "
                                      f"{os.strerror(err)}")
                self.add(net, expires_at)
                out.append(None)
            except KernelError as e:
                out.append(str(e))
        return out

    def banned(self) -> list[Network]:
        """Every network in the ban maps (what a pinned map kept)."""
        out: list[Network] = []
        for k in self.bpf["bans4"].keys():
            addr = ipaddress.IPv4Address(int(k.addr).to_bytes(4, "little"))
            out.append(ipaddress.ip_network(f"{addr}/{k.prefixlen}"))
        for k in self.bpf["bans6"].keys():
            out.append(ipaddress.ip_network(f"{ipaddress.IPv6Address(bytes(k.addr))}/{k.prefixlen}"))
        return out

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
        t = self.bpf["counters"]
        return {name: int(sum(t[t.Key(i)])) for i, name in COUNTERS.items()}

    # ---- filter rules (see netsentinel/filterrules.py)
    def set_rules(self, rules: list) -> None:
        """Load validated FilterRules as the new rule set: written into the
        set not in use, then switched to in one store (rule_state ACTIVE), so
        no packet sees a half-written set or none at all. A set identical to
        the active one (a pinned map after a restart) is kept as it is. Hit
        counters are rebased per slot."""
        table, state, hits = self.bpf["rules"], self.bpf["rule_state"], self.bpf["rule_hits"]
        active = 1 if state[state.Key(RULE_STATE_ACTIVE)].value else 0
        leaves = [self._rule_leaf(table, r) for r in rules]
        base = active * MAX_RULES
        same = state[state.Key(RULE_STATE_COUNT0 + active)].value == len(rules) and all(
            bytes(table[table.Key(base + i)]) == bytes(leaf) for i, leaf in enumerate(leaves))
        if not same:
            active, base = 1 - active, (1 - active) * MAX_RULES
            buckets = self.bpf["rule_buckets"]
            for i, leaf in enumerate(leaves):
                table[table.Key(base + i)] = leaf
                buckets[buckets.Key(base + i)] = buckets.Leaf()   # a rate limit starts full
            state[state.Key(RULE_STATE_COUNT0 + active)] = ctypes.c_uint(len(rules))
        self._rule_base = base
        self._rule_slots = [(r.id, int(sum(hits[hits.Key(base + i)]))) for i, r in enumerate(rules)]
        if not same:
            state[state.Key(RULE_STATE_ACTIVE)] = ctypes.c_uint(active)   # the switch

    @staticmethod
    def _rule_leaf(table, rule):
        leaf = table.Leaf()
        leaf.action = RULE_ACTION[rule.action]
        leaf.family = rule.family
        leaf.proto = rule.proto
        leaf.tcp_flags_mask, leaf.tcp_flags_value = rule.flags_mask, rule.flags_value
        leaf.icmp_type_set = int(rule.icmp_type is not None)
        leaf.icmp_type = rule.icmp_type or 0
        leaf.sport_min, leaf.sport_max = rule.sport
        leaf.dport_min, leaf.dport_max = rule.dport
        if rule.rate_pps:
            leaf.cost_ns = max(1, 1_000_000_000 // rule.rate_pps)
            leaf.burst = rule.burst
        if rule.src is not None:
            src = rule.src.network_address.packed
            mask = rule.src.netmask.packed
            ctypes.memmove(leaf.src, src, len(src))
            ctypes.memmove(leaf.mask, mask, len(mask))
        return leaf

    def rule_hits(self) -> dict[str, int]:
        hits = self.bpf["rule_hits"]
        return {rid: int(sum(hits[hits.Key(self._rule_base + i)])) - base
                for i, (rid, base) in enumerate(self._rule_slots)}
