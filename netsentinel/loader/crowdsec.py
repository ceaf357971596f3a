"""NetSentinel as a CrowdSec bouncer: the fleet's decisions enforced here.

A thread follows the LAPI decisions stream (GET /v1/decisions/stream with
the bouncer key: `startup=true` for the whole set, then deltas) and hands
each answer to the loader's loop, which turns `ban` decisions for an Ip or
Range into bans of source `crowdsec` through BanTable.apply_external: the
same checks as every ban (whitelist, this host, its gateway, SSH peers),
refusals logged and counted. HTTP never runs in the loop.

- A key stays banned while any live decision names it, until the latest
  of their expiries; a ban someone else made here (manual, dashboard, ...)
  is never taken over or lifted by the fleet.
- Outage: the last known set stays enforced (bans expire on their own
  TTL), pulls back off exponentially, and status says so. After any
  failure the next pull is a full one (`startup=true`) and reconciles.
- Restart: crowdsec bans come back from banned_ips.json like any ban; the
  first full pull adds what is missing and lifts crowdsec bans the fleet no
  longer has. A ban already in place with the same expiry is not rewritten.
"""

from __future__ import annotations

import math
import queue
import re
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable

import httpx

from .. import __version__
from ..addresses import AddressError, canonical, parse_target
from ..timefmt import expiry_of, utc_now_iso

SOURCE = "crowdsec"
MAX_BACKOFF_S = 300.0
EXPIRY_SLACK_S = 5.0   # a ban within this of the decision's expiry is left as it is
CHUNK = 5000           # commands applied per loop turn: a 100k startup pull never stalls the loop
_DURATION = re.compile(r"(\d+(?:\.\d*)?)(ns|us|µs|ms|s|m|h)")
_UNIT = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def go_duration(text: object) -> float:
    """Seconds in a Go duration string as LAPI writes it ("3h59m58.1s", "-2.3ms")."""
    if not isinstance(text, str) or not text:
        raise ValueError(f"duration {text!r} is not a Go duration string")
    sign, body = (-1.0, text[1:]) if text[0] == "-" else (1.0, text.lstrip("+"))
    parts = _DURATION.findall(body)
    if not parts or "".join(n + u for n, u in parts) != body:
        raise ValueError(f"duration {text!r} is not a Go duration string")
    return sign * sum(float(n) * _UNIT[u] for n, u in parts)


def prepare(d: object) -> tuple:
    """One `new` decision read without the table (run in the HTTP thread, so
    parsing a 100,000-decision pull never stalls the loop):
    (kind, id, what) with kind ignore/late (what: why), refuse (what: the
    command to refuse), take (what: key, seconds left, reason) or expired."""
    did = decision_id(d)
    if did is None:
        return ("ignore", None, "malformed decisions")
    if str(d.get("type", "")).lower() != "ban":
        return ("ignore", did, f"{d.get('type')!r} decisions (only bans are enforced)")
    if str(d.get("scope", "")).lower() not in ("ip", "range"):
        return ("ignore", did, f"{d.get('scope')!r}-scope decisions")
    try:
        secs = go_duration(d.get("duration"))
    except ValueError:
        return ("late", did, "decisions without a readable duration")
    if secs <= 0:
        return ("expired", did, None)
    reason = f"{d.get('scenario') or '?'} ({d.get('origin') or '?'})"[:300]
    try:
        key = canonical(parse_target(d.get("value")))
    except AddressError:
        return ("refuse", did, {"action": "ban", "ip": d.get("value"), "reason": reason,
                                "source": SOURCE})
    return ("take", did, (key, secs, reason))


def prepare_answer(body: dict) -> list[tuple] | None:
    """prepare() for each decision of an answer; None when it has no 'new' list."""
    new = body.get("new") or []
    return [prepare(d) for d in new] if isinstance(new, list) else None


def decision_id(d: object) -> int | str | None:
    """A decision's id, or None when it has none usable (a malformed entry)."""
    i = d.get("id") if isinstance(d, dict) else None
    return i if isinstance(i, (int, str)) and not isinstance(i, bool) else None


@dataclass
class FleetOptions:
    """--crowdsec-* flags. repr never shows the key or password."""
    url: str | None = None
    key: str | None = field(default=None, repr=False)
    machine_id: str | None = None
    machine_password: str | None = field(default=None, repr=False)
    interval: float = 10.0


class PullError(Exception):
    pass


@dataclass
class Decision:
    key: str
    expires: float
    reason: str


class Bouncer:
    def __init__(self, url: str, key: str, warn: Callable[[str], None], *, interval: float = 10.0,
                 timeout: float = 10.0, clock: Callable[[], float] = time.time):
        self.url = url.rstrip("/")
        self.warn = warn
        self.interval = interval
        self.clock = clock
        self.client = httpx.Client(
            base_url=self.url, timeout=httpx.Timeout(timeout, connect=min(3.0, timeout)),
            headers={"X-Api-Key": key, "User-Agent": f"netsentinel-bouncer/{__version__}"})
        self.decisions: dict[object, Decision] = {}
        self.own_ids: Callable[[], set] = set   # decisions this host pushed (machine side)
        self._results: queue.Queue = queue.Queue()
        # (command, expiry or None), computed from one answer, applied CHUNK a turn
        self._pending: deque[tuple[dict, float | None]] = deque()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.state = "starting"
        self.counts = {"pulls": 0, "failures": 0, "applied": 0, "removed": 0, "refused": 0,
                       "ignored": 0}
        self.last_pull_at: str | None = None
        # The last full answer: request and JSON (fetch), then prepare() (read).
        self.full_fetch_s: float | None = None
        self.full_read_s: float | None = None
        self.last_error: str | None = None
        self.retry_in: float | None = None

    # ------------------------------------------------------------ thread (HTTP only)
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="crowdsec-bouncer", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=15)
        self.client.close()

    def _pull(self, startup: bool) -> dict:
        r = self.client.get("/v1/decisions/stream", params={"startup": "true"} if startup else None)
        if r.status_code == 403:
            raise PullError("LAPI refused the bouncer key (403); check --crowdsec-key "
                            "against `cscli bouncers list`")
        if r.status_code != 200:
            raise PullError(f"LAPI answered HTTP {r.status_code}: {r.text[:120]!r}")
        body = r.json()
        if not isinstance(body, dict):
            raise PullError(f"LAPI answered {type(body).__name__}, expected an object")
        return body

    def _run(self) -> None:
        startup, failures = True, 0
        while not self._stop.is_set():
            try:
                t = time.monotonic()
                body = self._pull(startup)
                fetched_at, t1 = self.clock(), time.monotonic()
                prepared = prepare_answer(body)
                self._results.put(("pull", startup, body, fetched_at, prepared,
                                   (t1 - t, time.monotonic() - t1)))
                startup, failures, wait = False, 0, self.interval
            except (httpx.HTTPError, ValueError, PullError) as e:
                failures += 1
                startup = True   # resync in full once it answers again
                wait = min(self.interval * 2 ** failures, max(MAX_BACKOFF_S, self.interval))
                msg = str(e).splitlines()[0] if str(e) else type(e).__name__
                self._results.put(("error", msg, wait))
            self._stop.wait(wait)

    # ------------------------------------------------------------ loop side
    def poll(self, table) -> int:
        """Apply what the thread fetched (never blocks on HTTP), at most CHUNK
        commands per call. Returns how many commands went to the table."""
        while not self._pending:
            try:
                item = self._results.get_nowait()
            except queue.Empty:
                return 0
            if item[0] == "error":
                self._outage(item[1], item[2], table)
            else:
                self._apply(table, *item[1:])
        # The next answer is computed against the table only once this one
        # is fully applied (a delete must see the ban it lifts).
        now = self.clock()
        # ttl_seconds from the decision's expiry as each slice goes in: a ban
        # applied 10 s into a big pull must not end 10 s late (and be seen as
        # changed, and re-applied, at the next full pull).
        chunk = [dict(c, ttl_seconds=max(1, math.ceil(e - now))) if e is not None else c
                 for c, e in (self._pending.popleft() for _ in range(min(CHUNK, len(self._pending))))]
        # banned_ips.json is saved once the whole answer is in (a 100k-ban
        # file takes about a second to write); until then LAPI still has it all.
        return self._send(table, chunk, save=not self._pending)

    def _outage(self, msg: str, wait: float, table) -> None:
        self.counts["failures"] += 1
        self.last_error, self.retry_in = msg, wait
        if self.state != "outage":
            held = sum(1 for r in table.bans.values() if r.get("source") == SOURCE)
            self.warn(f"crowdsec: LAPI {self.url} unreachable ({msg}); keeping the {held} "
                      f"crowdsec bans enforced, retrying with backoff (next in {wait:.0f}s)")
        self.state = "outage"

    def _apply(self, table, startup: bool, body: dict, fetched_at: float,
               prepared: list[tuple] | None = None, took: tuple | None = None) -> None:
        if self.state == "outage":
            self.warn(f"crowdsec: LAPI {self.url} answers again; resynchronised")
        self.state, self.last_error, self.retry_in = "ok", None, None
        self.counts["pulls"] += 1
        self.last_pull_at = utc_now_iso(fetched_at)
        if startup and took is not None:
            self.full_fetch_s, self.full_read_s = (round(x, 3) for x in took)
        new, deleted = body.get("new") or [], body.get("deleted") or []
        if prepared is None and isinstance(new, list):
            prepared = prepare_answer(body)
        if not isinstance(new, list) or not isinstance(deleted, list):
            self.warn("crowdsec: LAPI stream answer without 'new'/'deleted' lists; ignored")
            return
        touched: set[str] = set()
        if startup:
            self.decisions.clear()
            touched |= {k for k, r in table.bans.items() if r.get("source") == SOURCE}
        for d in deleted:
            old = self.decisions.pop(decision_id(d), None)
            if old:
                touched.add(old.key)
        cmds: list[dict] = []
        own = self.own_ids()
        ignored: dict[str, int] = {}
        for p in prepared:
            why = self._take(p, fetched_at, own, touched, cmds)
            if why:
                ignored[why] = ignored.get(why, 0) + 1
        if ignored:
            self.counts["ignored"] += sum(ignored.values())
            self.warn("crowdsec: ignored " + ", ".join(f"{n} {w}" for w, n in ignored.items()))
        self._pending.extend([(c, None) for c in cmds] + self._commands_for(touched, table))

    def _take(self, p: tuple, fetched_at: float, own: set, touched: set, cmds: list) -> str | None:
        """Record one new decision as prepare() read it; returns why it was ignored, or None."""
        kind, did, what = p
        if kind == "ignore":
            return what
        if did in own:
            return None   # this host's own ban, pushed as a machine: already here
        if kind == "late":   # what prepare() found after the own-ids check
            return what
        if kind == "refuse":
            # Refused like any bad ban: logged, counted, kept in the rejected file.
            cmds.append(what)
        elif kind == "take":
            key, secs, reason = what
            self.decisions[did] = Decision(key, fetched_at + secs, reason)
            touched.add(key)
        return None

    def _commands_for(self, keys: set[str], table) -> list[tuple[dict, float | None]]:
        """What the table needs so each key matches the live decisions, each
        ban with its expiry (poll() turns it into ttl_seconds)."""
        now = self.clock()
        best: dict[str, Decision] = {}
        for d in self.decisions.values():
            if d.key in keys and d.expires > now and (d.key not in best or d.expires > best[d.key].expires):
                best[d.key] = d
        cmds = []
        for k in keys:
            rec = table.bans.get(k)
            mine = rec is not None and rec.get("source") == SOURCE
            if rec is not None and not mine:
                continue   # a local ban wins; the fleet neither extends nor lifts it
            d = best.get(k)
            if d is None:
                if mine:
                    cmds.append(({"action": "unban", "ip": k, "source": SOURCE}, None))
                continue
            if mine and rec.get("reason") == d.reason and abs((expiry_of(rec) or 0) - d.expires) < EXPIRY_SLACK_S:
                continue
            cmds.append(({"action": "ban", "ip": k, "reason": d.reason, "source": SOURCE},
                         d.expires))
        return cmds

    def _send(self, table, cmds: list[dict], save: bool = True) -> int:
        if not cmds:
            return 0
        applied = table.apply_external(cmds, save)
        refused = {cmd["ip"] for cmd, ok in zip(cmds, applied) if not ok}
        for cmd, ok in zip(cmds, applied):
            self.counts["refused" if not ok else "applied" if cmd["action"] == "ban" else "removed"] += 1
        if refused:   # refused once, not again at every delta
            self.decisions = {i: d for i, d in self.decisions.items() if d.key not in refused}
        return len(cmds)

    def status(self) -> dict:
        return {"lapi": self.url, "state": self.state, "decisions": len(self.decisions),
                "pending": len(self._pending),
                "last_pull_at": self.last_pull_at, "full_fetch_s": self.full_fetch_s, "full_read_s": self.full_read_s,
                "last_error": self.last_error,
                "retry_in_s": self.retry_in, **self.counts}
