#!/usr/bin/env python3
"""bench/eventstore.py - the event store under a day's load, per engine.

For SQLite (records/events.sqlite3's engine) and, when Debian's postgresql
and psycopg are installed, a throwaway PostgreSQL server:
  insert   verdicts/s the writer takes (bench/store_insert.py): through the
           analyzer's path (the writer's own process) and in-process, side
           by side, 100,000 verdicts made before the clock starts
  fill     rows/s while filling the store for the queries (row_of +
           StoreWriter in this process, batches of 5,000)
  writes   bytes written to disk per 10,000 events (SQLite: this process's
           /proc/self/io write_bytes, WAL and checkpoints included)
  size     bytes per million events (file or pg_database_size)
  queries  median of 5 runs (after one warm-up) of the dashboard's and
           `netsentinel events`' queries at 10,000 and at 1,000,000 rows
           (timelines and counts read the per-minute summary, the same
           figures from the rows alone beside them)
  migration how long the writer's start takes to migrate a store of
           1,000,000 rows schema 3 wrote (process ids, the new indexes), and
           one schema 1 wrote (the summary too: one GROUP BY)
  retention (SQLite) a cap of 64 MB filled twice over through the writer:
           the largest file seen and the size at the end
  analyzer the real llm_analyzer.py (--backend rules) on 100,000 replayed
           events without and with the store: what the store costs it
The rows are bench/gen_day.py's day (200 programs, floods, scanners).

USAGE: .venv/bin/python bench/eventstore.py [--quick] [--rows N] [--no-postgres] [--queries-only]
                                           [--writer-only] [--insert-rows N]
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

from common import emit, parser  # noqa: E402
from gen_day import day, entry  # noqa: E402
from netsentinel.eventstore import Query, Retention, open_store  # noqa: E402
from netsentinel.eventstore.rows import row_of  # noqa: E402
from netsentinel.records import ANALYZER_STATUS, EVENTS_DB  # noqa: E402
from netsentinel.eventstore.sqlite import WAL_LIMIT_BYTES  # noqa: E402
from netsentinel.eventstore.writer import StoreWriter  # noqa: E402
from netsentinel.testing import postgres  # noqa: E402
from store_insert import run_insert  # noqa: E402

EPILOG = """examples:
  .venv/bin/python bench/eventstore.py --quick        # CI size: 2,000 and 20,000 rows
  .venv/bin/python bench/eventstore.py                # 10,000 and 1,000,000 rows (a few minutes)
  .venv/bin/python bench/eventstore.py --queries-only # no retention nor analyzer runs
  .venv/bin/python bench/eventstore.py --writer-only  # the writer's rows: insert and retention
"""
BATCH = 5000


def _io_written() -> int:
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("write_bytes:"):
            return int(line.split()[1])
    return 0


def _queries(end: float) -> dict:
    day_ago, hour_ago = end - 86400, end - 3600
    return {
        "latest page (50)": lambda db: db.search(Query(limit=50)),
        "24 h count": lambda db: db.count(Query(since=day_ago)),
        "HIGH+ last hour, page + count": lambda db: (
            db.search(Query(since=hour_ago, level="HIGH", min_level=True)),
            db.count(Query(since=hour_ago, level="HIGH", min_level=True))),
        "timeline 24 h (15 min x level)": lambda db: db.timeline(Query(since=day_ago), 900),
        "level counts 24 h": lambda db: db.counts_by("level", Query(since=day_ago)),
        "timelines by kind 24 h (30 min, the Overview)":
            lambda db: db.timelines_by_kind(Query(since=day_ago), 1800),
        "threats by level 24 h (the Overview)":
            lambda db: db.counts_by("level", Query(since=day_ago, kind="threat")),
        "process curl 24 h, page + count": lambda db: (
            db.search(Query(process="curl", since=day_ago)),
            db.count(Query(process="curl", since=day_ago))),
        "investigate one address": lambda db: (db.investigate(Query(addr="203.0.113.59")),
                                               db.search(Query(addr="203.0.113.59", oldest_first=True))),
        "text 'scanner' last hour": lambda db: db.search(Query(text="scanner", since=hour_ago)),
    }


# The queries the summary answers, timed again from the rows alone (a store
# without it): what it saves.
SUMMARISED = ("24 h count", "timeline 24 h (15 min x level)", "level counts 24 h",
              "timelines by kind 24 h (30 min, the Overview)")


def _time_queries(db, end: float) -> dict:
    out = _time(db, _queries(end))
    db._summary = False
    out.update({f"{k}, from the rows": v for k, v in
                _time(db, {k: _queries(end)[k] for k in SUMMARISED}).items()})
    db._summary = None
    return out


def _time(db, queries: dict) -> dict:
    out = {}
    for name, fn in queries.items():
        fn(db)
        runs = []
        for _ in range(5):
            t = time.perf_counter()
            fn(db)
            runs.append(time.perf_counter() - t)
        out[name] = round(statistics.median(runs) * 1000, 2)
    return out


def run_engine(engine: str, dsn: str, small: int, large: int, end: float, progress) -> dict:
    writer = StoreWriter(dsn, progress, Retention(max_age_days=3650, max_bytes=1 << 40))
    res = {"engine": engine, "rows_small": small, "rows_large": large}
    timed, done, io_before = 0.0, 0, _io_written()
    events = (e for e in day(large, seed=7, end=end) if e[1] is not None)
    for target in (small, large):
        while done < target:
            chunk = []
            for i, (ev, verdict) in zip(range(min(BATCH, target - done)), events):
                chunk.append(entry(done + i, ev, verdict))
            if not chunk:
                break
            t = time.perf_counter()
            writer.add([row_of(e) for e in chunk])
            writer.flush()
            timed += time.perf_counter() - t
            done += len(chunk)
            if done == small and engine == "sqlite":
                res["disk_bytes_per_10k"] = int((_io_written() - io_before) * 10_000 / small)
        assert writer.status()["ok"], writer.status()
        db = open_store(dsn, readonly=True)
        res[f"load1_at_queries_{target}"] = round(os.getloadavg()[0], 2)
        res[f"queries_ms_{target}"] = _time_queries(db, end)
        db.close()
        progress(f"{engine}: {done} rows, queries timed")
    res["insert_rows_per_s"] = int(done / timed)
    db = writer.db
    if engine == "sqlite":
        res["bytes_per_million"] = int(db.file_bytes() * 1_000_000 / done)
    else:
        cur = db.conn.cursor()
        cur.execute("SELECT pg_database_size(current_database())")
        res["bytes_per_million"] = int(cur.fetchone()[0] * 1_000_000 / done)
        db.conn.rollback()
    writer.close()
    res["migration_3_to_4_s"] = _time_migration(dsn, done, 3)
    res["migration_s"] = _time_migration(dsn, done, 1)
    progress(f"{engine}: {done} rows migrated from schema 3 in {res['migration_3_to_4_s']} s, "
             f"from schema 1 (the summary built) in {res['migration_s']} s")
    return res


def _time_migration(dsn: str, rows: int, version: int) -> float:
    """The store as schema 3 left it (comm, exe and saddr indexes; no proc,
    procs nor conn_saddrs), and for version 1 also no summary (its connects
    column stays: schema 3's step fills it again), then the writer's start."""
    db = open_store(dsn)
    cur = db.conn.cursor()
    for stmt in ("DROP INDEX events_proc_ts", "DROP INDEX events_saddr_ts",
                 "ALTER TABLE events DROP COLUMN proc", "DROP TABLE procs", "DROP TABLE conn_saddrs",
                 *(f"CREATE INDEX events_{c}_ts ON events ({c}, ts)" for c in ("comm", "exe", "saddr")),
                 *(("DROP TABLE event_buckets",) if version == 1 else ())):
        cur.execute(stmt)
    cur.execute(f"UPDATE meta SET value = '{version}' WHERE key = 'schema_version'")
    db.conn.commit()
    db.close()
    t = time.perf_counter()
    db = open_store(dsn)
    took = time.perf_counter() - t
    assert db.count(Query()) == rows, "the summary built does not count every row"
    db.close()
    return round(took, 2)


def run_retention(tmp: Path, cap: int, end: float, progress) -> dict:
    path = tmp / "retention.sqlite3"
    writer = StoreWriter(str(path), progress, Retention(max_age_days=3650, max_bytes=cap))
    largest, largest_db, rows = 0, 0, 0
    events = (e for e in day(10_000_000, seed=9, end=end) if e[1] is not None)
    while rows < 4 * cap // 800:  # about twice the cap's worth (~800 bytes a row)
        writer.add([row_of(entry(rows + i, ev, v)) for i, (ev, v) in zip(range(BATCH), events)])
        writer.flush(now=rows)  # one retention round per batch, as one per second at ~5k/s
        rows += BATCH
        largest = max(largest, writer.db.file_bytes())
        largest_db = max(largest_db, path.stat().st_size)
    st = writer.status()
    final = writer.db.file_bytes()
    writer.close()
    progress(f"retention: cap {cap >> 20} MB, largest file {largest >> 20} MB")
    return {"cap_bytes": cap, "rows_written": st["rows_written"], "rows_expired": st["rows_expired"],
            "largest_bytes_with_wal": largest, "largest_db_file_bytes": largest_db,
            "final_bytes_with_wal": final, "wal_limit_bytes": WAL_LIMIT_BYTES}


def run_analyzer_cost(tmp: Path, n: int, progress) -> list[dict]:
    """The real llm_analyzer.py (--backend rules) on n replayed events,
    without and with the store: what the store costs the pipeline."""
    import json
    import os
    import subprocess
    feed = tmp / "day.jsonl"
    with open(feed, "w") as f:
        for ev, _ in day(n, seed=11):
            f.write(json.dumps(ev, separators=(",", ":")) + "\n")
    env = {**os.environ, "NETSENTINEL_CONFIG": str(tmp / "filter_config.json"),
           "OLLAMA_HOST": "http://127.0.0.1:9", "ZHIPUAI_API_KEY": ""}
    env.pop("NETSENTINEL_STORE_DSN", None)
    out = []
    for case, extra in (("no store", ["--no-store"]), ("sqlite store", [])):
        records = tmp / f"records-{len(out)}"
        t = time.perf_counter()
        with open(feed) as stdin:
            r = subprocess.run([sys.executable, str(HERE.parent / "llm_analyzer.py"), "--records",
                                str(records), "--backend", "rules", "--no-history", *extra],
                               stdin=stdin, capture_output=True, text=True, env=env, timeout=900)
        wall = time.perf_counter() - t
        if r.returncode != 0:
            raise SystemExit(f"bench/eventstore.py: the analyzer failed: {r.stderr[-500:]}")
        status = json.loads((records / ANALYZER_STATUS).read_text())
        out.append({"case": case, "events": status["events_total"], "wall_s": round(wall, 2),
                    "events_per_s": int(status["events_total"] / wall),
                    "rows_stored": (status["event_store"] or {}).get("rows_written", 0)})
        progress(f"analyzer, {case}: {out[-1]['events_per_s']} events/s")
    return out


def main() -> int:
    p = parser("eventstore", __doc__, EPILOG)
    p.add_argument("--rows", type=int, default=1_000_000, help="the large size (default 1,000,000)")
    p.add_argument("--insert-rows", type=int, help="verdicts for the insert row (default 100,000)")
    p.add_argument("--no-postgres", action="store_true")
    p.add_argument("--queries-only", action="store_true",
                   help="insert, queries and migration only (no retention nor analyzer runs)")
    p.add_argument("--writer-only", action="store_true",
                   help="the writer's rows only: insert and retention (no queries, no analyzer)")
    args = p.parse_args()
    started = time.time()

    def progress(msg: str) -> None:
        print(f"[bench eventstore +{time.time() - started:.1f}s] {msg}", file=sys.stderr, flush=True)

    small, large = (2000, 20_000) if args.quick else (10_000, args.rows)
    n_insert = args.insert_rows or (5000 if args.quick else 100_000)
    cap = (4 << 20) if args.quick else (64 << 20)
    end = time.time()
    results, inserts = [], []
    with tempfile.TemporaryDirectory(prefix="ns-bench-store-") as tmp:
        inserts += run_insert("sqlite", lambda tag: str(Path(tmp) / f"insert-{tag}.sqlite3"),
                              n_insert, end, progress)
        if not args.writer_only:
            results.append(run_engine("sqlite", str(Path(tmp) / EVENTS_DB), small, large, end,
                                      progress))
        why = "--no-postgres" if args.no_postgres else postgres.unavailable()
        if why:
            results.append({"engine": "postgres", "skipped": why})
            progress(f"postgres skipped: {why}")
        else:
            with postgres.PgServer() as pg:
                inserts += run_insert("postgres", lambda tag: pg.create_db(f"insert_{tag}"),
                                      n_insert, end, progress)
                if not args.writer_only:
                    results.append(run_engine("postgres", pg.create_db("bench"), small, large,
                                              end, progress))
        retention = analyzer = None
        if not args.queries_only:
            retention = run_retention(Path(tmp), cap, end, progress)
        if not (args.queries_only or args.writer_only):
            analyzer = run_analyzer_cost(Path(tmp), 5000 if args.quick else 100_000, progress)
    rows = [[f"{r['engine']}, insert ({r['path']})", f"{r['rows_per_s']:,}",
             r["writer_cpu_us_per_row"], r["feeder_cpu_us_per_row"] or "", "", "", r["load1"]]
            for r in inserts]
    for r in results:
        if "skipped" in r:
            rows.append([r["engine"], "skipped", "", "", "", "", ""])
            continue
        rows.append([f"{r['engine']}, fill", f"{r['insert_rows_per_s']:,}", "", "",
                     f"{r.get('disk_bytes_per_10k', 0) >> 10:,} KiB",
                     f"{r['bytes_per_million'] >> 20:,} MiB",
                     f"{max(v for k, v in r[f'queries_ms_{large}'].items() if 'from the rows' not in k):.0f} ms"])
    load = Path("/proc/loadavg").read_text().split()[:3]
    emit("eventstore", args.quick, {"rows_small": small, "rows_large": large, "batch": BATCH,
                                    "insert_rows": n_insert, "retention_cap_bytes": cap},
         results, started,
         ["engine, case", "rows/s", "writer CPU us/row", "feeder CPU us/row", "disk per 10k",
          "size per 1M", f"slowest query at {large:,} / load"],
         rows, insert=inserts, insert_target_rows_per_s=50_000, retention=retention,
         analyzer=analyzer, loadavg_at_end=load)
    return 0


if __name__ == "__main__":
    sys.exit(main())
