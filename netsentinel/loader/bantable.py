"""The loader's ban table: ban_commands.json → kernel maps → banned_ips.json.

- Commands are consumed through cmdqueue.CommandQueue: removed from the file
  only after they were applied or refused; a command added meanwhile stays.
- A refused command is kept in ban_commands.rejected.json with its reason,
  reported on stderr and as a ban_rejected event; the loop goes on.
- banned_ips.json is written only here; bans are restored from it at start
  and removed from kernel and file when their TTL runs out.
"""

from __future__ import annotations

import heapq
import json
import time
from typing import Any, Callable

from .. import dropdir
from ..addresses import AddressError, Network, canonical, parse_target
from .banbatch import BULK_MIN, PolicyIndex, apply_batch
from .cmdqueue import CommandQueue
from ..bancheck import BanCommand, BanRefused, check_policy, parse_command
from ..netinfo import Protected, ProtectedCache
from ..records import BAN_COMMANDS, BAN_COMMANDS_REJECTED, BANNED_IPS
from ..store import RecordsStore
from ..timefmt import expiry_of, is_expired, utc_now_iso
from .refusals import Refusals
from ..whitelist import WhitelistFile

SYNC_SLICE = 4096  # bans whose kernel counters are copied per status cycle
# From this many bans banned_ips.json is written without indentation, from
# each ban's own encoded text, kept until that ban changes (_encoded): a save
# re-encodes the bans that changed and joins the rest, so a command costs
# O(changes) of encoding (50,000 bans: all encoded 67 ms, joined ~3 ms)
# and what is left is one sequential write of the file.
COMPACT_FROM = 1000
# Kernel totals a ban's own counters add to: unchanged since a full pass of
# sync_counters, no ban's counters can have moved (the pass is skipped).
BAN_TOTALS = ("xdp_drops", "connect_blocked", "sendmsg_blocked")
Emit = Callable[..., Any]


class BanTable:
    def __init__(self, store: RecordsStore, enforcer, whitelist: WhitelistFile, emit: Emit,
                 warn: Callable[[str], None], *, clock: Callable[[], float] = time.time,
                 protected: Callable[[], Protected] | None = None):
        self.store = store
        self.enforcer = enforcer
        self.whitelist = whitelist
        self.emit = emit
        self.warn = warn
        self.clock = clock
        self._protected_fn = protected
        self.protected_cache = ProtectedCache()   # refreshed ahead by loader/protect.py
        self.bans: dict[str, dict] = {}
        self._nets: dict[str, Network] = {}
        self._refuse = Refusals(store, BAN_COMMANDS_REJECTED, "ban_rejected", "command", warn, emit)
        self.queue = CommandQueue(store, BAN_COMMANDS, self._handle, self._refuse, self._save)
        self._refuse.ref = lambda: self.queue.current_ref
        dropdir.ensure(store.root, BAN_COMMANDS)
        self._sync_pos = 0
        self._synced_totals: tuple | None = None   # kernel totals all counters were copied at
        self._cycle: tuple[tuple | None, int] = (None, 0)   # (totals at a pass's start, bans left)
        self._encoded: dict[str, bytes] = {}       # key -> b'"key":{...}', see COMPACT_FROM
        self._exp: dict[str, float | None] = {}    # key -> expiry (Unix time), None: never
        self._heap: list[tuple[float, str]] = []   # (expiry, key), see expire()

    # ------------------------------------------------------------ policy
    def protected(self) -> Protected:
        if self._protected_fn is not None:
            return self._protected_fn()
        return self.protected_cache.get(self.whitelist.current().config["protect_ssh_ports"])

    def check(self, raw: Any) -> BanCommand:
        cmd = parse_command(raw)
        check_policy(cmd, self.whitelist.current(), self.protected())
        return cmd

    # ------------------------------------------------------------ restore
    def restore(self) -> int:
        saved = self.store.read(BANNED_IPS, default={})
        if not isinstance(saved, dict):
            self.store.set_aside(BANNED_IPS)
            self.warn(f"{BANNED_IPS} was not a JSON object; set aside, starting with no bans")
            saved = {}
        now = self.clock()
        index = PolicyIndex(self.whitelist.current(), self.protected())
        keep: list[tuple[str, Network, float | None, dict]] = []
        for key, rec in saved.items():
            rec = dict(rec) if isinstance(rec, dict) else {}
            try:
                net = parse_target(key)
                if not is_expired(rec, now):
                    index.check(BanCommand("ban", net, rec.get("reason"),
                                           rec.get("source") or "manual", None))
            except (AddressError, BanRefused) as e:
                self._refuse({"action": "ban", "ip": key, **rec}, f"restore: {e}")
                continue
            if is_expired(rec, now):
                self.emit("unban", ip=canonical(net), result="expired", reason=rec.get("reason"),
                          source=rec.get("source"), expires_at=rec.get("expires_at"))
                continue
            keep.append((canonical(net), net, expiry_of(rec), rec))
        # One loop of bpf() calls; many bans: one ban_batch event (banbatch).
        errors = self.enforcer.add_many([(net, exp) for _, net, exp, _ in keep])
        quiet = len(keep) >= BULK_MIN
        for (k, net, exp, rec), err in zip(keep, errors):
            if err is not None:   # map full, kernel refused
                self._refuse({"action": "ban", "ip": k, **rec}, f"restore: {err}")
                continue
            rec.setdefault("drops", 0)
            rec.setdefault("last_drop_at", None)
            self.put(k, net, rec, exp)
            if not quiet:
                self.emit("ban", ip=k, result="restored", reason=rec.get("reason"),
                          source=rec.get("source"), expires_at=rec.get("expires_at"))
        restored = sum(e is None for e in errors)
        if quiet:
            self.emit("ban_batch", result="restored", reason=f"{restored} restored of {len(keep)}",
                      count=len(keep), restored=restored, refused=len(keep) - restored)
        self._save()
        return restored

    # ------------------------------------------------------------ commands
    def commands_changed(self) -> bool:
        return self.queue.changed()

    def process_commands(self) -> int:
        """Apply what is queued in ban_commands.json; returns how many were handled."""
        return self.queue.process()

    def _handle(self, raw: Any) -> None:
        try:
            cmd = self.check(raw)
        except BanRefused as e:
            self._refuse(raw, str(e))
            return
        if cmd.action == "ban":
            self._ban(cmd, raw)
        else:
            self._unban(cmd)

    def _ban(self, cmd: BanCommand, raw: dict) -> None:
        k = cmd.key
        now = self.clock()
        try:
            self.enforcer.add(cmd.net, now + cmd.ttl_seconds if cmd.ttl_seconds else None)
        except Exception as e:  # map full, kernel refused
            self._refuse(raw, str(e))
            return
        expires = utc_now_iso(now + cmd.ttl_seconds) if cmd.ttl_seconds else None
        existed = self.record(cmd, raw, now, expires, utc_now_iso(now))
        self.emit("ban", ip=k, result="updated" if existed else "applied", reason=cmd.reason,
                  source=cmd.source, expires_at=expires)

    def _unban(self, cmd: BanCommand, result: str = "removed") -> None:
        k = cmd.key
        rec = self.drop(k)
        removed = self.enforcer.remove(cmd.net)
        self.emit("unban", ip=k, result=result if (rec or removed) else "not_banned",
                  reason=(rec or {}).get("reason"), source=cmd.source,
                  expires_at=(rec or {}).get("expires_at"))

    @property
    def rejected(self) -> int:
        return self._refuse.count

    # ------------------------------------------------------------ the table itself
    def record(self, cmd: BanCommand, raw: dict, now: float, expires: str | None, now_iso: str) -> bool:
        """Record an applied ban command (expires: the text of now + its
        ttl); True when it renewed a ban already in the table."""
        rec = self.bans.get(cmd.key)
        existed = rec is not None
        if rec is None:
            rec = {"drops": 0, "last_drop_at": None, "banned_at": now_iso}
        rec.update(reason=cmd.reason, source=cmd.source, expires_at=expires)
        if "threat_id" in raw:
            rec["threat_id"] = raw["threat_id"]
        self.put(cmd.key, cmd.net, rec, now + cmd.ttl_seconds if cmd.ttl_seconds else None)
        return existed

    def put(self, k: str, net: Network, rec: dict, expires: float | None) -> None:
        """Record a ban (rec's expires_at is the text of `expires`)."""
        self.bans[k], self._nets[k] = rec, net
        self._exp[k] = expires
        self._encoded.pop(k, None)
        if expires is not None:
            heapq.heappush(self._heap, (expires, k))
            if len(self._heap) > 2 * len(self.bans) + 1024:   # re-bans leave stale entries
                self._heap = [(e, b) for b, e in self._exp.items() if e is not None]
                heapq.heapify(self._heap)

    def drop(self, k: str) -> dict | None:
        self._encoded.pop(k, None)
        self._nets.pop(k, None)
        self._exp.pop(k, None)
        return self.bans.pop(k, None)

    # ------------------------------------------------------------ expiry, counters
    def expire(self) -> int:
        """Lift the bans whose time is up: called every loop turn, so a heap
        of expiries (entries of re-banned or lifted keys skipped) and not a
        scan of every ban (100,000 bans: 0.2 s a turn)."""
        now = self.clock()
        due: dict[str, None] = {}   # ordered, each key once (a re-ban may push the same entry)
        while self._heap and self._heap[0][0] <= now:
            exp, k = heapq.heappop(self._heap)
            if self._exp.get(k) == exp:
                due[k] = None
        for k in due:
            net = self._nets[k]
            self._unban(BanCommand("unban", net, None, "ttl", None), result="expired")
        if due:
            self._save()
        return len(due)

    def sync_counters(self, limit: int | None = SYNC_SLICE) -> int:
        """Copy per-ban counters from the kernel into banned_ips.json for up
        to `limit` bans per call, the next slice each time (round robin), so a
        large ban table never stalls the loader's loop (None: all of them).
        Returns how many records changed."""
        if not self.bans:
            return 0
        totals = self._ban_totals()
        if totals is not None and totals == self._synced_totals:
            return 0   # nothing dropped or blocked since every ban was last read
        keys = list(self.bans)
        n = len(keys) if limit is None else min(limit, len(keys))
        start_totals, left = self._cycle
        if left <= 0:   # a new pass over every ban, from these totals on
            start_totals, left = totals, len(keys)
        left -= n
        if left <= 0:   # a whole pass done: everything counted by start_totals is copied
            self._synced_totals = start_totals
        self._cycle = (start_totals, left)
        start = self._sync_pos % len(keys)
        self._sync_pos = start + n
        changed = 0
        for i in range(start, start + n):
            k = keys[i % len(keys)]
            rec = self.bans[k]
            c = self.enforcer.counters(self._nets[k])
            if c is None:
                continue
            if c.drops != rec.get("drops") or c.blocked != rec.get("blocked", 0):
                rec["drops"] = c.drops
                rec["last_drop_at"] = utc_now_iso(c.last_drop_at) if c.last_drop_at else None
                rec["blocked"] = c.blocked
                rec["last_blocked_at"] = utc_now_iso(c.last_blocked_at) if c.last_blocked_at else None
                self._encoded.pop(k, None)
                changed += 1
        if changed:
            self._save()
        return changed

    def ban_now(self, raw: dict) -> bool:
        """Apply one command immediately (--ban at startup). True if applied."""
        before = self.rejected
        with self.store.locked():
            self._handle(raw)
            self._save()
        return self.rejected == before

    def apply_external(self, cmds: list[dict], save: bool = True) -> list[bool]:
        """Apply commands from another channel than ban_commands.json (the
        CrowdSec bouncer) with the same checks, refusals and events, under
        the records lock, saved once (save=False: by a later call; a big
        batch comes in slices). From BULK_MIN commands on, through
        banbatch (one `ban_batch` event instead of one per ban). Returns
        applied-or-not per command."""
        done = []
        with self.store.locked():
            if len(cmds) >= BULK_MIN:   # one summary event, see banbatch
                done = apply_batch(self, cmds)
            else:
                for raw in cmds:
                    before = self.rejected
                    self._handle(raw)
                    done.append(self.rejected == before)
            if save:
                self._save()
        return done

    def _ban_totals(self) -> tuple | None:
        try:
            t = self.enforcer.totals()
            return tuple(t[n] for n in BAN_TOTALS)
        except Exception:  # noqa: BLE001 - no totals (a stand-in enforcer): read every ban
            return None

    def _save(self) -> None:
        if len(self.bans) < COMPACT_FROM:   # small: indented, for a person reading it
            self._encoded.clear()
            self.store.write(BANNED_IPS, self.bans)
            return
        enc = self._encoded
        parts = []
        for k, rec in self.bans.items():
            part = enc.get(k)
            if part is None:
                part = enc[k] = _encode_entry(k, rec)
            parts.append(part)
        self.store.write_bytes(BANNED_IPS, b"{" + b",".join(parts) + b"}\n")


def _encode_entry(k: str, rec: dict) -> bytes:
    """'"key":{record}' as the C encoder writes it; a str that is not UTF-8
    (a hand-edited reason) goes through store.write's own scrubbing."""
    text = json.dumps({k: rec}, ensure_ascii=False)[1:-1]
    try:
        return text.encode()
    except UnicodeEncodeError:
        from ..events import scrub_value
        return json.dumps(scrub_value({k: rec}), ensure_ascii=False)[1:-1].encode()

