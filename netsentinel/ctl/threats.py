"""`netsentinel threats list|show|approve|reject`: the review queue
(records/pending_threats.json) from a terminal, one threat or many by filter
(`--category host_sweep --older-than 1h`). Decisions go through
netsentinel.threats, as the dashboard's do: approving queues a ban command,
checked as the loader checks it; a refused ban leaves the threat pending."""

from __future__ import annotations

import argparse
import time

from .. import threats
from ..errors import DecisionError
from ..levels import LEVELS, rank
from ..bancheck import BanRefused
from ..cliargs import EXIT_FAILURE, EXIT_USAGE
from ..liveness import ago, ts_of
from ..netinfo import protected_addresses
from ..store import StoreError
from ..whitelist import ConfigError
from .common import duration_arg, fail, open_store, one_line, print_json, print_table, whitelist_file




def _target(t: dict) -> str:
    return str(threats.target_of(t) or "-")


def matches(t: dict, args, now: float) -> bool:
    if args.status != "all" and t.get("status") != args.status:
        return False
    if args.category and t.get("category") != args.category:
        return False
    if args.level and rank(t.get("level")) < rank(args.level):
        return False
    if args.target and _target(t) != args.target:
        return False
    if args.older_than:
        created = ts_of(t.get("created_at"))
        if created is None or now - created < args.older_than:
            return False
    return True


def selected(args) -> list[dict]:
    items = threats.list_threats(open_store(args))
    now = time.time()
    ids = getattr(args, "ids", None) or []
    if ids:
        by_id = {t.get("id"): t for t in items}
        missing = [i for i in ids if i not in by_id]
        if missing:
            fail(f"no threat with id {', '.join(missing)} (see netsentinel threats list --status all)",
                 EXIT_USAGE)
        return [by_id[i] for i in ids if matches(by_id[i], args, now)]
    return [t for t in items if matches(t, args, now)]


def cmd_list(args) -> int:
    items = selected(args)
    if args.json:
        print_json(items)
        return 0
    now = time.time()
    rows = [(t.get("id"), t.get("status"), t.get("level"), t.get("count", 1), _target(t),
             t.get("category"), ago(t.get("created_at"), now), one_line(t.get("reason"), 70))
            for t in items]
    print_table(("ID", "STATUS", "LEVEL", "COUNT", "TARGET", "CATEGORY", "FIRST SEEN", "REASON"),
                rows, f"no {'' if args.status == 'all' else args.status + ' '}threats")
    return 0


def cmd_show(args) -> int:
    args.ids, args.status = [args.id], "all"
    (t,) = selected(args)
    if args.json:
        print_json(t)
        return 0
    ev = t.get("event") or {}
    for key in ("id", "status", "level", "category", "confidence", "count", "created_at",
                "last_seen", "verdict_source", "backend", "recommended_action", "decided_at",
                "decided_by", "note"):
        if t.get(key) is not None:
            print(f"{key + ':':<20}{t[key]}")
    print(f"{'target:':<20}{_target(t)}")
    print(f"{'reason:':<20}{one_line(t.get('reason'), 500)}")
    if ev:
        who = " ".join(str(ev.get(k)) for k in ("comm", "exe") if ev.get(k))
        print(f"{'event:':<20}{ev.get('type', 'connection')} {who} pid {ev.get('pid')} uid "
              f"{ev.get('uid')} -> {ev.get('daddr')}:{ev.get('dport')}")
    if t.get("ban_command"):
        print(f"{'ban command:':<20}{t['ban_command']}")
    return 0


def cmd_decide(args, approve: bool) -> int:
    if not args.ids and not (args.category or args.level or args.older_than or args.target):
        fail("name threat ids or a filter (--category, --level, --older-than, --target)", EXIT_USAGE)
    args.status = "pending"
    items = selected(args)
    if not items:
        print("no pending threats match")
        return 0
    store = open_store(args)
    wl_file = whitelist_file(args)
    failed = 0
    try:
        wl = wl_file.load() if approve else None
    except (ConfigError, StoreError, OSError) as e:
        fail(f"{wl_file.path}: {e}; nothing decided", EXIT_FAILURE)
    protected = protected_addresses(wl.config["protect_ssh_ports"]) if approve else None
    for t in items:
        tid = t["id"]
        if args.dry_run:
            print(f"would {'approve' if approve else 'reject'} {tid} ({t.get('level')} "
                  f"{t.get('category')} {_target(t)})")
            continue
        try:
            if approve:
                d = threats.approve(store, tid, by="netsentinel-cli", note=args.note,
                                    ttl_seconds=args.ttl, whitelist=wl, protected=protected)
                print(f"approved {tid}: ban {d['ban_command']['ip']} queued")
            else:
                d = threats.reject(store, tid, by="netsentinel-cli", note=args.note,
                                   whitelist_file=wl_file if args.whitelist else None)
                extra = f"; whitelisted {d['whitelisted']}" if d.get("whitelisted") else ""
                print(f"rejected {tid}{extra}")
        except BanRefused as e:
            failed += 1
            print(f"refused {tid}: {e}; it stays pending (reject it, or ban by hand)")
        except (DecisionError, ConfigError, StoreError) as e:
            failed += 1
            print(f"failed {tid}: {e}")
    if failed:
        fail(f"{failed} of {len(items)} threats not decided (see above)", EXIT_FAILURE)
    return 0


def _filters(p: argparse.ArgumentParser, status: bool) -> None:
    if status:
        p.add_argument("--status", choices=threats.STATUSES + ("all",), default="pending",
                       help="default pending")
    p.add_argument("--category", help="e.g. host_sweep, port_scan, flood")
    p.add_argument("--level", choices=LEVELS, help="this level or higher")
    p.add_argument("--older-than", type=duration_arg, metavar="DURATION",
                   help="first seen at least this long ago: 30m, 1h, 2d")
    p.add_argument("--target", metavar="ADDRESS", help="threats about this address")


def register(sub) -> None:
    t = sub.add_parser("threats", help="the review queue: list, show, approve, reject")
    tsub = t.add_subparsers(dest="action", required=True, metavar="{list,show,approve,reject}")
    ls = tsub.add_parser("list", help="threats (pending by default)")
    _filters(ls, status=True)
    ls.add_argument("--json", action="store_true", help="a JSON list of the threat records")
    ls.set_defaults(run=cmd_list)
    sh = tsub.add_parser("show", help="one threat in full")
    sh.add_argument("id")
    sh.add_argument("--json", action="store_true", help="the threat record")
    sh.set_defaults(run=cmd_show, category=None, level=None, older_than=None, target=None)
    for name, approve in (("approve", True), ("reject", False)):
        d = tsub.add_parser(name, help=("queue a ban for each threat's target" if approve else
                                        "record that each threat is harmless"))
        d.add_argument("ids", nargs="*", metavar="ID", help="threat ids (or a filter)")
        _filters(d, status=False)
        if approve:
            d.add_argument("--ttl", type=duration_arg, metavar="DURATION", help="ban expiry: 1h, 7d")
        else:
            d.add_argument("--whitelist", action="store_true", help="also whitelist each target")
        d.add_argument("--note", help="kept with the decision")
        d.add_argument("--dry-run", action="store_true", help="say what would be decided, decide nothing")
        d.set_defaults(run=lambda a, approve=approve: cmd_decide(a, approve))
