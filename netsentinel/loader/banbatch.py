"""Big ban batches (a 100,000-decision CrowdSec startup pull, a large
banned_ips.json restored at start) applied in seconds, every ban still
checked like any other.

What differs from one command at a time (BanTable._handle):
- the policy (whitelist, this host's addresses, its gateway, SSH peers) is
  read once per batch and indexed (PolicyIndex): a target that overlaps
  none of it, with a long enough prefix, needs no further look; anything
  else goes through bancheck.check_policy, which gives the exact refusal;
- the kernel maps are written in one loop of bpf() calls (Enforcer.add_many;
  LPM tries have no batch operation);
- one `ban_batch` event (and so one stderr line) sums the batch up instead
  of one `ban`/`unban` event per address. Refusals are still reported one by
  one (line, event, ban_commands.rejected.json). Batches smaller than
  BULK_MIN keep per-ban events.
"""

from __future__ import annotations

from bisect import bisect_right
from typing import Any

from ..addresses import Network
from ..bancheck import BanCommand, BanRefused, check_policy, parse_command
from ..netinfo import Protected
from ..timefmt import utc_now_iso
from ..whitelist import Whitelist

BULK_MIN = 256   # commands in one call from which the batch path (and its summary event) is taken


class PolicyIndex:
    """Every network a ban must not overlap (whitelist and protected), merged
    into sorted disjoint intervals per family: one bisect per target."""

    def __init__(self, whitelist: Whitelist, protected: Protected):
        self.whitelist, self.protected = whitelist, protected
        self.min_prefix = {4: whitelist.config["min_ban_prefix"]["ipv4"],
                           6: whitelist.config["min_ban_prefix"]["ipv6"]}
        nets = list(whitelist.networks) + [p for p, _ in protected.entries]
        self.starts: dict[int, list[int]] = {}
        self.ends: dict[int, list[int]] = {}
        for v in (4, 6):
            merged: list[list[int]] = []
            for a, b in sorted(_span(n) for n in nets if n.version == v):
                if merged and a <= merged[-1][1] + 1:
                    merged[-1][1] = max(merged[-1][1], b)
                else:
                    merged.append([a, b])
            self.starts[v] = [a for a, _ in merged]
            self.ends[v] = [b for _, b in merged]

    def clear(self, net: Network) -> bool:
        """True when net certainly passes check_policy (False: ask it)."""
        if net.prefixlen < self.min_prefix[net.version]:
            return False
        a, b = _span(net)
        if a == 0 or net.network_address.is_multicast:
            return False
        i = bisect_right(self.starts[net.version], b) - 1
        return i < 0 or self.ends[net.version][i] < a

    def check(self, cmd: BanCommand) -> None:
        """check_policy's verdict, raising BanRefused with its words."""
        if cmd.action == "ban" and not self.clear(cmd.net):
            check_policy(cmd, self.whitelist, self.protected)


def _span(net: Network) -> tuple[int, int]:
    a = int(net.network_address)
    return a, a | ((1 << (net.max_prefixlen - net.prefixlen)) - 1)


def apply_batch(table, cmds: list[Any]) -> list[bool]:
    """Apply a batch of ban/unban commands to a BanTable (lock held by the
    caller); applied-or-not per command, one `ban_batch` event at the end."""
    index = PolicyIndex(table.whitelist.current(), table.protected())
    done = [False] * len(cmds)
    adds: list[tuple[int, BanCommand, Any]] = []
    pending: set[str] = set()   # keys in adds
    counts = {"applied": 0, "updated": 0, "removed": 0, "not_banned": 0, "refused": 0}
    sources: set[str] = set()
    for i, raw in enumerate(cmds):
        try:
            cmd = parse_command(raw)
            index.check(cmd)
        except BanRefused as e:
            table._refuse(raw, str(e))
            counts["refused"] += 1
            continue
        sources.add(cmd.source)
        if cmd.action == "ban":
            adds.append((i, cmd, raw))
            pending.add(cmd.key)
            continue
        if cmd.key in pending:   # a ban earlier in the batch goes in first
            _flush(table, adds, done, counts)
            pending.clear()
        rec = table.drop(cmd.key)
        removed = table.enforcer.remove(cmd.net)
        counts["removed" if (rec or removed) else "not_banned"] += 1
        done[i] = True
    _flush(table, adds, done, counts)
    table.emit("ban_batch", result="done", source=",".join(sorted(sources)) or None,
               reason=", ".join(f"{n} {k.replace('_', ' ')}" for k, n in counts.items() if n)
               + f" of {len(cmds)}", count=len(cmds), **counts)
    return done


def _flush(table, adds: list, done: list[bool], counts: dict) -> None:
    if not adds:
        return
    now = table.clock()
    now_iso = utc_now_iso(now)
    iso: dict[int, str] = {}   # ttl -> expiry text: a pull shares few distinct ttls
    errors = table.enforcer.add_many(
        [(c.net, now + c.ttl_seconds if c.ttl_seconds else None) for _, c, _ in adds])
    for (i, cmd, raw), err in zip(adds, errors):
        if err is not None:   # map full, kernel refused
            table._refuse(raw, err)
            counts["refused"] += 1
            continue
        ttl = cmd.ttl_seconds
        expires = (iso.get(ttl) or iso.setdefault(ttl, utc_now_iso(now + ttl))) if ttl else None
        counts["updated" if table.record(cmd, raw, now, expires, now_iso) else "applied"] += 1
        done[i] = True
    adds.clear()
