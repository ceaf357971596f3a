"""records/pending_threats.json: threats waiting for a person, and decisions.

The analyzer adds (or merges into an open duplicate); the dashboard approves
or rejects. Approving writes a ban command through the shared locked store;
nothing here ever decides a threat on a timeout.

A threat:
  {id, created_at, last_seen, count, level, category, confidence, reason,
   recommended_action, verdict_source, backend, event, target, dedupe_key,
   rule_level, rule_confidence (what the rules alone said: auto-ban rests on
   these), status: pending|approved|rejected, decided_at, decided_by, note,
   ban_command}
An aggregate (many targets of one actor, or the overflow summary) also has
aggregate: true and no target: it cannot be approved into a ban.

One attack, one threat: the analyzer keys a process's threats by its
identity (netsentinel/analyzer/keys.py), so a scan or sweep is
one entry whose targets_sample lists the destinations and whose sightings
keep the last few sightings, each whole (time, level, reason, process,
destination). The fields a threat shows (SIGHTING) are always one
sighting's: a stronger or newer one replaces them all together, so a
reason is never shown beside another sighting's process.
"""

from __future__ import annotations

import uuid
from typing import Any, Callable

from .bancheck import validate as validate_ban
from .containcmd import contain_command
from .decisions import decide, trim_decided
from .errors import DecisionError
from .records import CONTAIN_COMMANDS, PENDING_THREATS
from .sightings import actor_of, add_targets, folded, merge_sighting
from .store import RecordsStore
from .timefmt import utc_now_iso

STATUSES = ("pending", "approved", "rejected")
KEEP_DECIDED = 1000  # decided threats kept for the record; pending ones are never dropped
# The review queue must stay readable under attack (100,000 scanned hosts
# must not become 100,000 decisions): past PER_ACTOR_CAP open threats of one
# actor (a process identity, or a flood's source) in one category, further
# targets fold into one aggregate threat for that actor; past MAX_OPEN open
# threats in all, anything new folds into one overflow summary threat.
PER_ACTOR_CAP = 20
MAX_OPEN = 500
OVERFLOW_KEY = "overflow"


def _as_list(cur: Any, store: RecordsStore) -> list:
    """The threats of a (possibly hand-edited) file: a list of objects with
    a usable id and status. Anything else is kept aside (the file is copied
    to NAME.corrupt-<time> once) and left out, with one line saying so."""
    if not isinstance(cur, list):
        store.set_aside(PENDING_THREATS)
        store.warn(f"{PENDING_THREATS} was not a JSON list; set aside")
        return []
    good = [t for t in cur if isinstance(t, dict) and isinstance(t.get("id"), str)
            and t.get("status") in STATUSES]
    if len(good) != len(cur):
        stamp = utc_now_iso().replace(":", "")
        store.write(f"{PENDING_THREATS}.corrupt-{stamp}", cur)
        store.warn(f"{PENDING_THREATS}: {len(cur) - len(good)} entries are not threats "
                   "(no id or status); kept aside, the rest used")
    for t in good:
        c = t.get("count")
        if isinstance(c, bool) or not isinstance(c, int) or c < 1:
            t["count"] = 1  # a hand-edited count ("many") restarts the tally
        if not isinstance(t.get("confidence", 0), (int, float)) or isinstance(t.get("confidence"), bool):
            t["confidence"] = 0.0
    return good


def add_or_merge(store: RecordsStore, threat: dict, times: int = 1) -> tuple[dict, bool]:
    """Add a pending threat, or merge it into the open one with the same
    dedupe_key (count += times, last_seen, merge_sighting).
    times: how many sightings this call stands for (a writer that batches).
    Returns (stored threat, merged?)."""
    return add_or_merge_many(store, [(threat, times)])[0]


def add_or_merge_many(store: RecordsStore, items: list[tuple[dict, int]]) -> list[tuple[dict, bool]]:
    """add_or_merge for a batch of (threat, times) in one locked rewrite of
    the file (a busy analyzer has many threats per second)."""
    now = utc_now_iso()
    out: list = []

    def change(cur: Any) -> list:
        threats = _as_list(cur, store)
        open_by_key = {t.get("dedupe_key"): t for t in threats
                       if t.get("status") == "pending" and t.get("dedupe_key") is not None}
        per_actor: dict = {}
        for t in open_by_key.values():
            g = (actor_of(t), t.get("category"))
            per_actor[g] = per_actor.get(g, 0) + 1
        for threat, times in items:
            t = open_by_key.get(threat.get("dedupe_key"))
            if t is None:
                actor, cat = actor_of(threat), threat.get("category")
                if per_actor.get((actor, cat), 0) >= PER_ACTOR_CAP:
                    threat = folded(threat, f"agg|{cat}|{actor}",
                                     f"{actor}: more than {PER_ACTOR_CAP} {cat} threats; "
                                     "further targets are counted here")
                if threat.get("dedupe_key") not in open_by_key and len(open_by_key) >= MAX_OPEN:
                    threat = folded(threat, OVERFLOW_KEY,
                                     f"review queue full ({MAX_OPEN} open threats); "
                                     "further threats are counted here")
                    threat["category"] = "overflow"
                t = open_by_key.get(threat.get("dedupe_key"))
                if threat.get("aggregate"):
                    ev = threat.get("event") or {}
                    add_targets(t if t is not None else threat, [ev.get("daddr") or ev.get("src")])
            if t is not None:
                t["count"] = int(t.get("count", 1)) + times
                t["last_seen"] = now
                merge_sighting(t, threat)
                out.append((t, True))
                continue
            new = {"id": uuid.uuid4().hex[:12], "created_at": now, "last_seen": now,
                   "count": times, "status": "pending", "decided_at": None, "decided_by": None,
                   "note": None}
            new.update({k: v for k, v in threat.items() if k not in ("id", "status")})
            threats.append(new)
            if new.get("dedupe_key") is not None:
                open_by_key[new["dedupe_key"]] = new
                g = (actor_of(new), new.get("category"))
                per_actor[g] = per_actor.get(g, 0) + 1
            out.append((new, False))
        return trim_decided(threats, KEEP_DECIDED)

    # Compact: the analyzer rewrites this file several times a second (C encoder).
    store.update(PENDING_THREATS, change, default=[], compact=True)
    return out


def list_threats(store: RecordsStore, status: str | None = None) -> list[dict]:
    threats = store.read(PENDING_THREATS, default=[], on_corrupt="default")
    if not isinstance(threats, list):
        return []
    return [t for t in threats if isinstance(t, dict) and (status is None or t.get("status") == status)]


def _decide(store: RecordsStore, threat_id: str, status: str, by: str, note: str | None,
            before: Callable[[dict], None] | None = None) -> dict:
    found: dict = {}

    def change(cur: Any) -> list:
        threats = _as_list(cur, store)
        found["t"] = decide(threats, threat_id, "threat", status, by, note, before)
        return threats

    store.update(PENDING_THREATS, change, default=[])
    return found["t"]


def target_of(threat: dict) -> str | None:
    """The address a threat is about: its target, else its event's destination."""
    return threat.get("target") or (threat.get("event") or {}).get("daddr")


def approve(store: RecordsStore, threat_id: str, *, by: str = "dashboard", note: str | None = None,
            ttl_seconds: int | None = None, whitelist=None, protected=None,
            source: str | None = None) -> dict:
    """Approve: status approved + a ban command for the threat's target.
    With whitelist and protected given, an unbannable target raises
    bancheck.BanRefused and the threat stays pending. source: the ban
    command's source (default review:ID; the analyzer's auto-ban uses "auto")."""
    def ban(t: dict) -> None:
        if t.get("aggregate"):  # many targets folded together: no one address to ban
            raise DecisionError(f"threat {threat_id} folds many targets ({t.get('count')} sightings): "
                              "reject it, or ban addresses from its targets_sample one by one")
        target = target_of(t)
        if not target:
            raise DecisionError(f"threat {threat_id} names no address to ban")
        cmd = {"action": "ban", "ip": target, "reason": f"{t.get('level')} {t.get('category')}: "
               f"{t.get('reason')}"[:300], "source": source or f"review:{threat_id}",
               "threat_id": threat_id}
        if ttl_seconds:
            cmd["ttl_seconds"] = int(ttl_seconds)
        if whitelist is not None and protected is not None:
            validate_ban(cmd, whitelist, protected)
        t["ban_command"] = store.append_command(cmd)

    with store.locked():
        return _decide(store, threat_id, "approved", by, note, ban)


def reject(store: RecordsStore, threat_id: str, *, by: str = "dashboard", note: str | None = None,
           whitelist_file=None) -> dict:
    """Reject; with whitelist_file (a WhitelistFile) the destination is whitelisted too."""
    def trust(t: dict) -> None:
        if whitelist_file is None:
            return
        target = target_of(t)
        if target:
            whitelist_file.edit("ip", target)
            t["whitelisted"] = target

    with store.locked():
        return _decide(store, threat_id, "rejected", by, note, trust)


# ---- containing the local process behind a threat (issue 12; containcmd.py)
# Destinations worth banning whoever talks to them: for these, banning stays
# the default action; for any other threat with a local actor, containing it is.
BAN_FIRST = frozenset({"known_bad_destination", "c2", "command_and_control", "malware"})


def local_actor(threat: dict) -> dict | None:
    """The local process a threat is about ({pid, exe, comm, uid}), or None
    (a flood's remote source, or a sighting without a process)."""
    ev = threat.get("event") if isinstance(threat.get("event"), dict) else {}
    pid = ev.get("pid")
    if threat.get("kind") == "flood" or isinstance(pid, bool) or not isinstance(pid, int) or pid < 2:
        return None
    return {"pid": pid, "exe": ev.get("exe"), "comm": ev.get("comm"), "uid": ev.get("uid")}


def default_action(threat: dict) -> str:
    """"contain" when a local process is the actor, "ban" for C2 and known-bad destinations."""
    if local_actor(threat) is None or threat.get("category") in BAN_FIRST:
        return "ban"
    return "contain"


def contain(store: RecordsStore, threat_id: str, *, by: str = "dashboard", note: str | None = None,
            ttl_seconds: int | None = None, stop: str | None = None, by_exe: bool = True) -> dict:
    """Approve by containing the threat's process (and, by_exe, its
    executable): a contain command in contain_commands.json, checked as the
    loader checks it (containcmd.ContainRefused keeps the threat pending).
    stop: "TERM" or "KILL" to stop the process once contained."""
    def queue(t: dict) -> None:
        actor = local_actor(t)
        if actor is None:
            raise DecisionError(f"threat {threat_id} names no local process to contain")
        exe = actor["exe"] if isinstance(actor["exe"], str) else None
        cmd = contain_command(pid=actor["pid"], exe=exe.removesuffix(" (deleted)") if exe else None,
                              by_exe=by_exe, ttl_seconds=int(ttl_seconds) if ttl_seconds else None,
                              reason=f"{t.get('level')} {t.get('category')}: {t.get('reason')}"[:300],
                              source=f"review:{threat_id}", signal=stop, threat_id=threat_id)
        t["contain_command"] = store.append_command(cmd, name=CONTAIN_COMMANDS)

    with store.locked():
        return _decide(store, threat_id, "approved", by, note, queue)
