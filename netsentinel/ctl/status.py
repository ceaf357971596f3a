"""`netsentinel status`: is everything up, and what is it doing
(fail2ban-client status / cscli metrics). Built from the status files the
processes write every few seconds, banned_ips.json and pending_threats.json.
The dashboard's login URL is shown to root (the token is root's).
Exit 0 when the loader and the analyzer are running, 1 when either is not
(the report is printed either way), so `netsentinel status >/dev/null ||`
works as a check."""

from __future__ import annotations

import os
import time
from collections import Counter

from .. import __version__, threats
from ..cliargs import EXIT_FAILURE
from ..liveness import duration, liveness
from ..records import ANALYZER_STATUS, DASHBOARD_TOKEN, LOADER_STATUS, SUPERVISOR_STATUS
from .bans import active_bans
from .common import open_store, print_json


def _read(store, name: str) -> dict:
    v = store.read(name, default={}, on_corrupt="default")
    return v if isinstance(v, dict) else {}


def _proc(name: str, status: dict, now: float) -> dict:
    live = liveness(name, status, now)
    return {"state": live.state, "text": live.text, "status": status}


def dashboard_login(store) -> dict:
    """The login URL `make run` prints, for whoever may read the root-only
    token (records/.dashboard_token); for anyone else, why not."""
    port = os.environ.get("DASHBOARD_PORT") or "8501"
    try:  # a dot file: not one RecordsStore hands out
        fd = os.open(store.root / DASHBOARD_TOKEN, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        fd = None
    except OSError:
        return {"login_url": None, "why": "the login token is root's: sudo netsentinel status"}
    token = ""
    if fd is not None:
        with os.fdopen(fd, encoding="utf-8", errors="replace") as f:
            token = f.read(4096).strip()
    if not token:
        return {"login_url": None, "why": "no login token yet: the dashboard makes it at its first start"}
    return {"login_url": f"http://127.0.0.1:{port}/?token={token}"}


def collect(store) -> dict:
    now = time.time()
    procs = {name: _read(store, f) for name, f in
             (("loader", LOADER_STATUS), ("analyzer", ANALYZER_STATUS),
              ("supervisor", SUPERVISOR_STATUS))}
    bans = active_bans(store)
    by_source: Counter = Counter()
    drops: Counter = Counter()
    for rec in bans.values():
        rec = rec if isinstance(rec, dict) else {}
        src = str(rec.get("source") or "manual")
        by_source[src] += 1
        drops[src] += int(rec.get("drops") or 0)
    items = threats.list_threats(store)
    pending = Counter(t.get("level") for t in items if t.get("status") == "pending")
    return {
        "version": __version__, "records": str(store.root),
        **{name: _proc(name, st, now) for name, st in procs.items()},
        "bans": {"active": len(bans), "by_source": dict(by_source), "drops_by_source": dict(drops)},
        "dashboard": dashboard_login(store),
        "threats": {"pending": sum(pending.values()), "pending_by_level": dict(pending),
                    **{s: sum(1 for t in items if t.get("status") == s)
                       for s in ("approved", "rejected")}},
    }


def _counts(c: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(c.items(), key=lambda kv: -kv[1])) or "none"


def render(r: dict) -> list[str]:
    lo, an, su = (r[k]["status"] for k in ("loader", "analyzer", "supervisor"))
    st = lo.get("stats") or {}
    out = [f"NetSentinel {r['version']}  records: {r['records']}", f"|- {r['loader']['text']}"]
    if lo:
        xdp = lo.get("xdp_mode") or "off"
        out.append(f"|    interface {lo.get('interface') or '-'}, XDP {xdp}"
                   + (f" ({lo['ingress_path']})" if lo.get("ingress_path") else "")
                   + f", cgroup blocks {'on' if lo.get('cgroup_block') else 'off'}, "
                   f"capture {lo.get('capture_mode')}, up {duration(float(st.get('uptime_s') or 0))}")
        out += [f"|    {lo[k]}" for k in ("xdp_native_error", "kernel_taint") if lo.get(k)]
        out.append(f"|    events {st.get('events', 0)}, lost {st.get('lost', 0)}, "
                   f"drops {st.get('drops_total', 0)}, blocked connects {st.get('blocked_connects', 0)}, "
                   f"rule drops {st.get('rule_drops', 0)}")
    out.append(f"|- {r['analyzer']['text']}")
    if an:
        inp = an.get("input") or {}
        out.append(f"|    backend {an.get('backend')} ({an.get('backend_status')}), events "
                   f"{an.get('events_total', 0)}, per minute {an.get('events_per_minute', 0)}"
                   + (f", bad lines {inp['bad_lines']}" if inp.get("bad_lines") else ""))
    if su:
        last = su.get("last_restart") or {}
        out.append(f"|- {r['supervisor']['text']}")
        out.append(f"|    analyzer restarts {su.get('analyzer_restarts', 0)}"
                   + (f" (last: {last.get('why')} at {last.get('at')})" if last else "")
                   + f", buffered lines {su.get('buffered_lines', 0)}, dropped {su.get('dropped_lines', 0)}")
    b, t = r["bans"], r["threats"]
    out.append(f"|- bans: {b['active']} active ({_counts(b['by_source'])}); drops by source: "
               f"{_counts(b['drops_by_source'])}")
    out.append(f"|- threats: {t['pending']} pending ({_counts(t['pending_by_level'])}), "
               f"{t['approved']} approved, {t['rejected']} rejected")
    d = r["dashboard"]
    out.append(f"`- dashboard: {d['login_url'] or d['why']}")
    return out


def cmd_status(args) -> int:
    r = collect(open_store(args))
    if args.json:
        print_json(r)
    else:
        print("\n".join(render(r)))
    healthy = r["loader"]["state"] == "running" and r["analyzer"]["state"] == "running"
    return 0 if healthy else EXIT_FAILURE


def register(sub) -> None:
    s = sub.add_parser("status", help="health of loader, analyzer and supervisor; bans; threats")
    s.add_argument("--json", action="store_true", help="one JSON object (status files included)")
    s.set_defaults(run=cmd_status)
