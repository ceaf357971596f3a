"""NetSentinel as a CrowdSec machine: what this host decided, shared.

Bans people approved here (manual, dashboard, threat reviews, --ban) and
automatic flood blocks are pushed to LAPI as alerts carrying one `ban`
decision each (scenario `netsentinel/<category>`, the evidence summary as
the message, the ban's remaining time as the duration; origin `crowdsec`,
as for any machine's decisions, so `cscli decisions list` shows them), so every bouncer of the fleet enforces them. Unbanning here
deletes exactly the decisions this host created (by id), nothing else.
The analyzer's unreviewed auto-bans (source `auto`) and bans that came
from the fleet (source `crowdsec`) are not pushed.

A worker thread does the HTTP (login with the machine's id and password,
token refreshed on 401) in order, retrying with backoff while LAPI is
down. What was pushed, and what still has to be deleted, is kept in
records/crowdsec_machine.json (written by the loop only) so a restart
neither pushes twice nor forgets a pending delete.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from typing import Callable

import httpx

from .. import __version__
from ..records import CROWDSEC_MACHINE, PENDING_THREATS
from ..store import RecordsStore
from ..timefmt import expiry_of, utc_now_iso
from .crowdsec import MAX_BACKOFF_S, PullError, SOURCE as FLEET_SOURCE

STATE = CROWDSEC_MACHINE
NOT_PUSHED = {FLEET_SOURCE, "auto"}
PERMANENT = "87600h"   # a ban without expiry: LAPI needs a duration; ten years


def scenario_of(rec: dict, threat: dict | None) -> tuple[str, str]:
    """(scenario, message) for a ban record and the threat it came from."""
    if threat:
        category = str(threat.get("category") or threat.get("kind") or "threat")
        msg = str(threat.get("reason") or rec.get("reason") or "")
    else:
        category = "manual" if not str(rec.get("source", "")).startswith("auto-flood") else "flood"
        msg = str(rec.get("reason") or "")
    slug = "".join(c if c.isalnum() or c in "_-" else "_" for c in category.lower())
    return f"netsentinel/{slug}", f"{msg} (NetSentinel, source {rec.get('source')})"[:500]


def id_lists(m: object) -> dict[str, list]:
    """{address: [decision ids]} from the state file, anything else dropped."""
    if not isinstance(m, dict):
        return {}
    return {k: [i for i in v if isinstance(i, int) and not isinstance(i, bool)]
            for k, v in m.items() if isinstance(k, str) and isinstance(v, list)}


class Machine:
    def __init__(self, url: str, machine_id: str, password: str, store: RecordsStore,
                 warn: Callable[[str], None], *, timeout: float = 10.0, retry: float = 2.0):
        self.url = url.rstrip("/")
        self.login = {"machine_id": machine_id, "password": password, "scenarios": []}
        self.store = store
        self.warn = warn
        self.retry = retry
        self.client = httpx.Client(base_url=self.url,
                                   timeout=httpx.Timeout(timeout, connect=min(3.0, timeout)),
                                   headers={"User-Agent": f"netsentinel-machine/{__version__}"})
        saved = store.read(STATE, default={}) or {}
        if not isinstance(saved, dict):
            store.set_aside(STATE)
            warn(f"{STATE} was not a JSON object; set aside (decisions pushed before may stay in LAPI)")
            saved = {}
        self.pushed: dict[str, list] = id_lists(saved.get("pushed"))
        self.to_delete: dict[str, list] = id_lists(saved.get("to_delete"))
        self._ops: deque = deque(("delete", k, ids) for k, ids in self.to_delete.items())
        self._cond = threading.Condition()
        self._results: queue.Queue = queue.Queue()
        self._stop = False
        self._token: str | None = None
        self._thread: threading.Thread | None = None
        self.state = "starting"
        self.last_error: str | None = None
        self.counts = {"pushed": 0, "deleted": 0, "failures": 0}

    # ------------------------------------------------------------ loop side
    def own_ids(self) -> set:
        """Decision ids this host created (live or still to delete): the
        bouncer leaves them alone, whatever it pulls meanwhile."""
        return {i for m in (self.pushed, self.to_delete) for ids in m.values() for i in ids}

    def on_outcome(self, type_: str, fields: dict, table) -> None:
        """A ban/unban the table just made (run.py forwards its events)."""
        k = fields.get("ip")
        if type_ == "ban" and fields.get("result") in ("applied", "restored", "updated"):
            rec = table.bans.get(k) or {}
            if rec.get("source") in NOT_PUSHED or k in self.pushed:
                return
            self.pushed[k] = []   # in flight; ids follow
            self._queue(("push", k, self._alert(k, rec)))
        elif type_ == "unban" and k in self.pushed:
            ids = self.pushed.pop(k)
            # An expired one expired in LAPI as well; one still in flight
            # (no ids yet) is deleted when its push reports back (poll).
            if fields.get("result") != "expired" and ids:
                self.to_delete[k] = ids
                self._queue(("delete", k, ids))
            self._save()

    def _alert(self, k: str, rec: dict) -> dict:
        threat = None
        if rec.get("threat_id"):
            threats = self.store.read(PENDING_THREATS, default=[]) or []
            threat = next((t for t in threats if isinstance(t, dict)
                           and t.get("id") == rec["threat_id"]), None)
        scenario, message = scenario_of(rec, threat)
        exp = expiry_of(rec)
        duration = f"{max(1, int(exp - time.time()))}s" if exp else PERMANENT
        now = utc_now_iso()
        scope = "Range" if "/" in k else "Ip"
        return {"scenario": scenario, "scenario_hash": "", "scenario_version": "", "message": message,
                "events_count": 1, "start_at": now, "stop_at": now, "capacity": 0, "leakspeed": "0",
                "simulated": False, "remediation": True, "events": [],
                "source": {"scope": scope, "value": k, **({"ip": k} if scope == "Ip" else {"range": k})},
                "decisions": [{"duration": duration, "type": "ban", "scope": scope, "value": k,
                               "origin": "crowdsec", "scenario": scenario}]}

    def poll(self) -> None:
        """Record what the worker finished (never blocks)."""
        changed = False
        while True:
            try:
                kind, k, payload = self._results.get_nowait()
            except queue.Empty:
                break
            if kind == "pushed":
                if k in self.pushed:
                    self.pushed[k] = payload
                else:   # unbanned while the push was in flight: delete what it made
                    self.to_delete[k] = payload
                    self._queue(("delete", k, payload))
                self.counts["pushed"] += 1
            elif kind == "deleted":
                if self.to_delete.get(k) == payload:
                    del self.to_delete[k]
                self.counts["deleted"] += 1
            changed = True
        if changed:
            self._save()

    def _save(self) -> None:
        self.store.write(STATE, {"pushed": {k: v for k, v in self.pushed.items() if v},
                                 "to_delete": self.to_delete})

    def _queue(self, op: tuple) -> None:
        with self._cond:
            self._ops.append(op)
            self._cond.notify()

    # ------------------------------------------------------------ thread (HTTP only)
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="crowdsec-machine", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify()
        if self._thread:
            self._thread.join(timeout=15)
        self.client.close()

    def _request(self, method: str, path: str, **kw) -> httpx.Response:
        for _ in range(2):
            if self._token is None:
                r = self.client.post("/v1/watchers/login", json=self.login)
                if r.status_code != 200:
                    raise PullError(f"LAPI refused the machine login (HTTP {r.status_code}); check "
                                    "--crowdsec-machine-id/password against `cscli machines list`")
                self._token = r.json()["token"]
            r = self.client.request(method, path, headers={"Authorization": f"Bearer {self._token}"},
                                    **kw)
            if r.status_code != 401:
                return r
            self._token = None
        raise PullError("LAPI kept refusing the machine token (401)")

    def _do(self, op: tuple):
        kind, k, arg = op
        if kind == "push":
            r = self._request("POST", "/v1/alerts", json=[arg])
            if r.status_code != 201:
                raise PullError(f"LAPI refused the alert for {k} (HTTP {r.status_code}): {r.text[:120]!r}")
            alert = self._request("GET", f"/v1/alerts/{r.json()[0]}").json()
            return ("pushed", k, [d["id"] for d in alert.get("decisions") or []])
        for i in arg:
            r = self._request("DELETE", f"/v1/decisions/{i}")
            if r.status_code not in (200, 404):
                raise PullError(f"LAPI refused to delete decision {i} (HTTP {r.status_code})")
        return ("deleted", k, arg)

    def _run(self) -> None:
        failures = 0
        while True:
            with self._cond:
                while not self._ops and not self._stop:
                    self._cond.wait()
                if self._stop:
                    return
                op = self._ops[0]
            try:
                self._results.put(self._do(op))
                with self._cond:
                    self._ops.popleft()
                if self.state != "ok" and failures:
                    self.warn(f"crowdsec machine: LAPI {self.url} answers again; catching up")
                self.state, self.last_error, failures = "ok", None, 0
            except (httpx.HTTPError, ValueError, KeyError, IndexError, PullError) as e:
                failures += 1
                self.counts["failures"] += 1
                msg = str(e).splitlines()[0] if str(e) else type(e).__name__
                if self.state != "outage":
                    self.warn(f"crowdsec machine: {op[0]} {op[1]} failed ({msg}); "
                              "kept queued, retrying with backoff")
                self.state, self.last_error = "outage", msg
                with self._cond:
                    self._cond.wait(min(self.retry * 2 ** failures, MAX_BACKOFF_S))

    def status(self) -> dict:
        return {"lapi": self.url, "state": self.state, "queued": len(self._ops),
                "pushed_bans": len(self.pushed), "last_error": self.last_error, **self.counts}
