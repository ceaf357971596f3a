"""`netsentinel events`: search the event store (connections, flows,
verdicts, threats, decisions) by time, process, user, address, port,
level, category and free text; `--investigate` adds a summary of
everything the filtered process/exe/address did. Reads only: it never
creates or migrates the store (docs/EVENTSTORE.md)."""

from __future__ import annotations

import argparse
import csv
import json
import pwd
import sys
import time
from pathlib import Path

from ..cliargs import EXIT_FAILURE, EXIT_USAGE
from ..eventstore import DSN_ENV, Query, SchemaTooNew, describe, is_postgres, open_store, resolve_dsn
from ..eventstore.rows import stored_record
from ..levels import LEVELS
from ..records import STACK
from ..stackfacts import connection_line, drop_line, stack_facts
from ..store import StoreError
from ..timefmt import parse_iso, utc_now_iso
from .common import PROG, duration_arg, fail, one_line, open_store as open_records, print_table

FORMATS = ("table", "json", "jsonl", "csv")
CSV_COLUMNS = ("time", "kind", "level", "category", "confidence", "verdict_source", "comm", "pid",
               "uid", "exe", "cmdline", "saddr", "daddr", "dport", "reason", "ref", "analyzed")
EXAMPLES = f"""examples:
  {PROG} events --since 1h --level HIGH+             # HIGH and CRITICAL of the last hour
  {PROG} events --process curl --dst 203.0.113.7
  {PROG} events --from 2026-12-01T08:00 --to 2026-12-01T09:00 --port 22 --format csv > ssh.csv
  {PROG} events --text "reverse shell" --limit 20 --page 2
  {PROG} events --exe /usr/bin/nc --investigate      # everything nc did, oldest first
  {PROG} events --addr 198.51.100.9 --investigate    # as destination or as source
store: --store-dsn DSN, else ${DSN_ENV}, else records/events.sqlite3"""


def _time_arg(text: str) -> float:
    try:
        t = parse_iso(text)
    except ValueError:
        t = None
    if t is None:
        raise argparse.ArgumentTypeError(f"invalid time {text!r} (ISO-8601 UTC: 2026-12-01T08:00)")
    return t


def _level_arg(text: str) -> tuple[str, bool]:
    level, at_least = text.upper().rstrip("+"), text.endswith("+")
    if level not in LEVELS:
        raise argparse.ArgumentTypeError(f"unknown level {text!r} (one of {', '.join(LEVELS)}; "
                                         "HIGH+ means HIGH or higher)")
    return level, at_least


def _user_arg(text: str) -> int:
    if text.isdigit():
        return int(text)
    try:
        return pwd.getpwnam(text).pw_uid
    except KeyError:
        raise argparse.ArgumentTypeError(f"no user {text!r} on this host (give a uid)") from None


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of 1 or more, got {text!r}")
    return int(text)


def _port_arg(text: str) -> int:
    if not text.isdigit() or int(text) > 65535:
        raise argparse.ArgumentTypeError(f"invalid port {text!r} (0-65535)")
    return int(text)


def query_of(args) -> Query:
    since, until = args.from_, args.to
    if args.since is not None:
        if since is not None:
            fail("give --since or --from, not both (see netsentinel events --help)", EXIT_USAGE)
        since = time.time() - args.since
    level, at_least = args.level or (None, False)
    try:
        return Query(since=since, until=until, kind=args.kind, process=args.process, exe=args.exe,
                     uid=args.user, dst=args.dst, src=args.src, addr=args.addr, port=args.port,
                     level=level, min_level=at_least, category=args.category, text=args.text,
                     limit=args.limit, page=args.page, oldest_first=args.oldest_first or args.investigate)
    except ValueError as e:
        fail(f"{e} (see netsentinel events --help)", EXIT_USAGE)


def open_reader(args):
    dsn = resolve_dsn(args.store_dsn, open_records(args))
    if not is_postgres(dsn):
        path = Path(dsn.removeprefix("sqlite://"))
        try:
            with open(path, "rb"):
                pass
        except FileNotFoundError:
            fail(f"no event store at {path} yet: the analyzer creates it when it starts "
                 "(or give --store-dsn)", EXIT_FAILURE)
        except OSError as e:  # it names processes and peers: root and its group only
            fail(f"cannot read the event store {path}: {e.strerror}; run as root (or a member "
                 "of the file's group)", EXIT_FAILURE)
    try:
        db = open_store(dsn, readonly=True)
        if db.schema_version() == 0:
            fail(f"{describe(dsn)} has no event table yet: the analyzer creates it when it starts",
                 EXIT_FAILURE)
        return db
    except (SchemaTooNew, ImportError) as e:
        fail(str(e), EXIT_FAILURE)
    except Exception as e:  # sqlite3/psycopg errors: unreadable, refused, damaged
        fail(f"cannot read the event store {describe(dsn)}: {' '.join(str(e).split())}", EXIT_FAILURE)


def _record(row: dict) -> dict:
    out = {k: v for k, v in row.items() if k not in ("doc", "ts", "analyzed_at")}
    out["record"] = stored_record(row)
    return out


def show(rows: list[dict], fmt: str, total: int, q: Query, summary: dict | None = None) -> None:
    if fmt == "json":
        out = {"total": total, "page": q.page, "limit": q.limit, "events": [_record(r) for r in rows]}
        if summary is not None:
            out = {"summary": _dated(summary), **out}
        print(json.dumps(out, indent=2, ensure_ascii=False))
    elif fmt == "jsonl":
        for r in rows:
            print(json.dumps(_record(r), ensure_ascii=False))
    elif fmt == "csv":
        w = csv.writer(sys.stdout)
        w.writerow(CSV_COLUMNS)
        w.writerows([[r.get(c) for c in CSV_COLUMNS] for r in rows])
    else:
        print_table(("TIME", "KIND", "LEVEL", "PROCESS", "PID", "UID", "SOURCE", "DESTINATION",
                     "CATEGORY", "REASON"),
                    [(r["time"][:19].replace("T", " "), r["kind"], r["level"], r["comm"], r["pid"],
                      r["uid"], r["saddr"], f"{r['daddr'] or '-'}:{r['dport'] if r['dport'] is not None else '-'}",
                      r["category"], one_line(r["reason"], 60)) for r in rows],
                    "no events match")
        pages = max(1, -(-total // q.limit))
        if total:
            print(f"-- {total} events, page {q.page} of {pages}", file=sys.stderr)


def _dated(s: dict) -> dict:
    return {k.replace("_ts", ""): (utc_now_iso(v) if v else None) if k.endswith("_ts") else v
            for k, v in s.items()}


def show_summary(s: dict, fmt: str) -> None:
    """The investigation header (json carries it inside show()'s object)."""
    if fmt == "jsonl":
        print(json.dumps({"summary": _dated(s)}, ensure_ascii=False))
        return
    if fmt != "table":
        return
    if s["rows"]:
        print(f"{s['rows']} events from {utc_now_iso(s['first_ts'])} to {utc_now_iso(s['last_ts'])}")
        for key, title in (("by_kind", "kinds"), ("by_level", "levels"), ("by_category", "categories"),
                           ("by_daddr", "destinations"), ("by_saddr", "sources"), ("by_dport", "ports"),
                           ("by_exe", "executables")):
            vals = [f"{v if v is not None else '-'} ({n})" for v, n in s[key]]
            print(f"  {title}: {', '.join(vals) or '-'}")
    stack = s.get("stack")
    if stack and (stack["connections"] or stack["drops"]):
        print(f"in the stack (the running loader's stack.json, since {stack['since'] or 'its start'}):")
        for c in stack["connections"]:
            print(f"  tcp: {connection_line(c)}")
        for d in stack["drops"]:
            print(f"  dropped: {drop_line(d)}")
    if s["rows"] or stack:
        print()


def _stack_summary(args, q: Query) -> dict | None:
    """What records/stack.json holds of the followed process or address; a
    file that cannot be read is said on stderr and left out."""
    try:
        doc = open_records(args).read(STACK, {}, on_corrupt="raise")   # a reader never moves it
    except StoreError as e:
        print(f"netsentinel events: {e}; the stack part of the summary is left out", file=sys.stderr)
        return None
    return stack_facts(doc, process=q.process, exe=q.exe, uid=q.uid, addr=q.addr or q.dst or q.src)


def cmd_events(args) -> int:
    q = query_of(args)
    if args.investigate and not any((q.process, q.exe, q.dst, q.src, q.addr, q.uid is not None)):
        fail("--investigate needs what to follow: --process, --exe, --user, --dst, --src or --addr",
             EXIT_USAGE)
    db = open_reader(args)
    try:
        summary = db.investigate(q) if args.investigate else None
        if summary is not None:
            summary["stack"] = _stack_summary(args, q)
            show_summary(summary, args.format)
        show(db.search(q), args.format, db.count(q) if args.format in ("table", "json") else 0, q,
             summary)
    finally:
        db.close()
    return 0


def register(sub) -> None:
    p = sub.add_parser("events", help="search the event history (time, process, address, level, text)",
                       formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EXAMPLES)
    t = p.add_argument_group("time (default: all stored)")
    t.add_argument("--since", type=duration_arg, metavar="DURATION", help="the last 15m, 1h, 7d, ...")
    t.add_argument("--from", dest="from_", type=_time_arg, metavar="TIME", help="from (ISO-8601 UTC)")
    t.add_argument("--to", type=_time_arg, metavar="TIME", help="until (ISO-8601 UTC, exclusive)")
    f = p.add_argument_group("filters (all must match)")
    f.add_argument("--process", metavar="NAME", help="process name (comm), exe base name, or exe path")
    f.add_argument("--exe", metavar="PATH", help="executable path, exactly")
    f.add_argument("--user", type=_user_arg, metavar="USER", help="user name or uid")
    f.add_argument("--dst", metavar="ADDR", help="destination address")
    f.add_argument("--src", metavar="ADDR", help="source address (a flow's sender)")
    f.add_argument("--addr", metavar="ADDR", help="an address as destination or source")
    f.add_argument("--port", type=_port_arg, metavar="N", help="destination port")
    f.add_argument("--level", type=_level_arg, metavar="LEVEL", help="INFO, MEDIUM, HIGH, CRITICAL; "
                   "HIGH+ for HIGH or higher")
    f.add_argument("--category", metavar="C")
    f.add_argument("--kind", choices=("connection", "flow", "threat", "decision"))
    f.add_argument("--text", metavar="T", help="substring of reason, category, process, cmdline, "
                                              "addresses (case-insensitive)")
    o = p.add_argument_group("output")
    o.add_argument("--limit", type=_positive_int, default=50, metavar="N", help="rows per page (50)")
    o.add_argument("--page", type=_positive_int, default=1, metavar="K")
    o.add_argument("--oldest-first", action="store_true")
    o.add_argument("--format", choices=FORMATS, default="table")
    o.add_argument("--investigate", action="store_true",
                   help="a summary of everything the filtered process/exe/user/address did, "
                        "then its events oldest first")
    p.add_argument("--store-dsn", metavar="DSN", help=f"the store (default records/events.sqlite3, "
                                                     f"or ${DSN_ENV})")
    p.set_defaults(run=cmd_events)
