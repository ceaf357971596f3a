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
import secrets
import time
from dataclasses import dataclass

from ..abi import (COUNTERS, MAX_RULES, RULE_ACTION, RULE_STATE_ACTIVE,
                   RULE_STATE_COUNT0)
from ..addresses import Network
from . import KernelError

BPF_NOEXIST = 1   # bpf_map_update_elem flag: fail with EEXIST when the key is there
# How old the read of the XDP drop path's per-CPU cache (ban_cache) that
# counters() adds to each ban may be: the loader's counter sync asks for
# thousands of bans in one go, and one read of every slot serves them all.
CACHE_READ_MAX_AGE_S = 0.1


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
    _cache_read: tuple[float, dict] = (-math.inf, {})   # (when, {(prefixlen, addr): [drops, last_ns]})

    # ---- the XDP drop path's cache of banned sources (bpf/netsentinel.h: ns_ban_cache)
    def init_ban_cache(self) -> None:
        """Turn the cache on (a first generation and a random slot hash)
        unless a pinned map already has it on."""
        t = self.bpf["ban_gen"]
        g = t[t.Key(0)]
        if not g.gen:
            g.gen, g.mult = 1, secrets.randbits(32) | 1
            t[t.Key(0)] = g

    def ban_set_changed(self) -> None:
        """After every change to bans4/bans6: slots filled before it are stale,
        so the trie decides again (a lifted ban stops dropping at once)."""
        t = self.bpf["ban_gen"]
        g = t[t.Key(0)]
        if g.gen:
            g.gen += 1
            t[t.Key(0)] = g

    def _cached_drops(self) -> dict:
        """Drops counted in cache slots, per covering ban, over every CPU."""
        when, counts = self._cache_read
        if time.monotonic() - when <= CACHE_READ_MAX_AGE_S:
            return counts
        counts = {}
        masks = {}
        for _k, per_cpu in self.bpf["ban_cache"].items_lookup_batch():
            for c in per_cpu:
                if not c.gen or not c.drops or c.prefixlen > 32:
                    continue
                mask = masks.get(c.prefixlen)
                if mask is None:
                    mask = masks[c.prefixlen] = int.from_bytes(
                        ipaddress.IPv4Network(f"0.0.0.0/{c.prefixlen}").netmask.packed, "little")
                acc = counts.setdefault((c.prefixlen, c.addr & mask), [0, 0])
                acc[0] += c.drops
                acc[1] = max(acc[1], c.last_drop_ns)
        self._cache_read = (time.monotonic(), counts)
        return counts

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
        self.ban_set_changed()

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
        self.ban_set_changed()
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
        except KeyError:
            return False
        self.ban_set_changed()
        return True

    def counters(self, net: Network) -> BanCounters | None:
        t, k = self._table_and_key(net)
        try:
            v = t[k]
        except KeyError:
            return None
        drops, last_drop = v.drops, v.last_drop_ns
        if net.version == 4:
            cached = self._cached_drops().get((k.prefixlen, k.addr))
            if cached:
                drops, last_drop = drops + cached[0], max(last_drop, cached[1])
        return BanCounters(drops, ktime_to_epoch(last_drop), v.blocked, ktime_to_epoch(v.last_blocked_ns))

    def totals(self) -> dict[str, int]:
        t = self.bpf["counters"]
        out = {name: int(sum(t[t.Key(i)])) for i, name in COUNTERS.items()}
        # The kernel's xdp_seen leaves out what a ban dropped (one count less per drop).
        out["xdp_seen"] += out["xdp_drops"]
        return out

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
