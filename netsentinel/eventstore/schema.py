"""The event store's one table, its indexes and its migrations, for both
engines. A row is one thing that happened, stamped with the event's own time
(`ts`, Unix seconds), not with when the analyzer judged it (`analyzed_at`):

  kind       connection | flow | threat | decision
  level, category, confidence, verdict_source, backend, reason
  pid, uid, comm, exe, cmdline     the process (connections)
  saddr, daddr, dport              addresses; for a flow, saddr is its source
  ref        the analyzer's entry id, or a threat id for threat/decision rows
  doc        the whole record as JSON, for export and the detail view
  connects   the connects a folded connection event stands for (its `count`,
             docs/events.md); NULL for one (schema 3)
  proc       the (comm, exe) pair's id in the procs table (schema 4,
             eventstore/procs.py), filled by the store on insert

A second table, event_buckets, counts the rows per minute, level and kind
(eventstore/summary.py): timelines and counts over a range read it instead
of a day's million index entries.
"""

from __future__ import annotations

import json
import math

SCHEMA_VERSION = 4

# Column order of a row (rows.row_of builds tuples in this order); the store
# appends `proc` as it inserts them (procs.Ids.insert).
COLUMNS = ("ts", "analyzed_at", "kind", "level", "category", "confidence", "verdict_source",
           "backend", "reason", "pid", "uid", "comm", "exe", "cmdline", "saddr", "daddr", "dport",
           "ref", "doc", "connects")
CONNECTS = COLUMNS.index("connects")
_V1_COLUMNS = COLUMNS[:CONNECTS]  # schema 1's table; schema 3 added connects

_TYPES = {"ts": "REAL NOT NULL", "analyzed_at": "REAL NOT NULL", "kind": "TEXT NOT NULL",
          "confidence": "REAL", "pid": "INTEGER", "uid": "INTEGER", "dport": "INTEGER",
          "doc": "TEXT NOT NULL"}
MAX_FOLD = 1 << 32  # a larger `count` is not a kernel fold: NULL in connects (doc keeps it)

# Indexes cost every insert (the store must keep up with 50k events/s), so
# only the filters people follow over time get a full one: process and exe
# (one (proc, ts) index since schema 4), destination (investigations), and
# time itself. Levels above INFO, kinds other than connection and (schema 4)
# the sources of rows that are not connections are rare: partial indexes
# hold only those rows, nearly free to keep; query.where() repeats their
# WHERE so both engines use them. Port, user, category and text are read within a time
# range from the ts index.
INDEXED = ("comm", "exe", "daddr", "saddr")  # schema 1's; schema 4's: proc, daddr, partial saddr
PARTIAL = {"level": "level <> 'INFO'", "kind": "kind <> 'connection'",
           "saddr": "kind <> 'connection'"}  # saddr: schema 4 (sources.py)


def _create(id_type: str, real: str) -> list[str]:
    cols = ",\n  ".join(f"{c} {_TYPES.get(c, 'TEXT')}".replace("REAL", real) for c in _V1_COLUMNS)
    stmts = [f"CREATE TABLE events (\n  id {id_type},\n  {cols}\n)",
             # level and kind ride along: timelines and counts by level or kind
             # over a range read this index alone, never the rows.
             "CREATE INDEX events_ts ON events (ts, level, kind)"]
    stmts += [f"CREATE INDEX events_{c}_ts ON events ({c}, ts)" for c in INDEXED]
    stmts += [f"CREATE INDEX events_{c}_ts ON events ({c}, ts) WHERE {PARTIAL[c]}"
              for c in ("level", "kind")]
    return stmts


# floor(ts) as an integer, exactly, for any sign (SQLite's without its
# optional math functions), and the remainder's function.
FLOOR_INT = {"sqlite": "(CAST({0} AS INTEGER) - ({0} < CAST({0} AS INTEGER)))",
             "postgres": "CAST(FLOOR({0}) AS BIGINT)"}
_MOD = {"sqlite": "(({0}) % {1})", "postgres": "MOD({0}, {1})"}


def bucket_sql(engine: str, int_expr: str, width: int) -> str:
    """The start of the `width`-second bucket holding the integer int_expr:
    int_expr - (int_expr mod width), mod taken towards minus infinity
    (SQL's % and MOD() keep the dividend's sign). Integer arithmetic: the
    same bucket as summary.bucket_start() for every row, with no rounding
    at a boundary."""
    mod = _MOD[engine]
    return f"({int_expr} - {mod.format(mod.format(int_expr, width) + f' + {width}', width)})"


BUCKET_S = 60  # the summary's bucket: a minute


def bucket_start(ts: float) -> int:
    """The start of ts's minute; the same integer as bucket_sql() (summary.py)."""
    x = math.floor(ts)
    return x - x % BUCKET_S


def fold(v: object) -> int | None:
    """A connection event's `count` as the connects column holds it."""
    return v if v.__class__ is int and 1 <= v <= MAX_FOLD else None


def _summary(engine: str, bigint: str, suffix: str) -> list[str]:
    """event_buckets: rows per (minute, level, kind), built from the rows
    there are (one GROUP BY), then kept by every insert and every retention
    step in their own transaction. A row with no level is counted under ''
    (a key column cannot be NULL). Idempotent: SQLite runs CREATE TABLE
    outside the migration's transaction."""
    minute = bucket_sql(engine, FLOOR_INT[engine].format("ts"), BUCKET_S)
    return [f"CREATE TABLE IF NOT EXISTS event_buckets (\n  bucket_start {bigint} NOT NULL,\n"
            f"  level TEXT NOT NULL,\n  kind TEXT NOT NULL,\n  n {bigint} NOT NULL,\n"
            f"  PRIMARY KEY (bucket_start, level, kind)\n){suffix}",
            "DELETE FROM event_buckets",
            f"INSERT INTO event_buckets (bucket_start, level, kind, n) SELECT {minute}, "
            f"COALESCE(level, ''), kind, COUNT(*) FROM events GROUP BY 1, 2, 3"]


def _connects(db, cur) -> None:
    """Schema 3: events.connects (a folded connection event's `count`) and
    event_buckets.connects (the connects each minute's rows stand for, which
    timelines plot), filled from the `count` the rows' doc kept. Idempotent:
    SQLite runs ALTER TABLE outside the migration's transaction."""
    big = "BIGINT" if db.engine == "postgres" else "INTEGER"
    for table, extra in (("events", ""), ("event_buckets", " NOT NULL DEFAULT 0")):
        if "connects" not in db.columns(table):
            cur.execute(f"ALTER TABLE {table} ADD COLUMN connects {big}{extra}")
    cur.execute("UPDATE event_buckets SET connects = n")
    ph = db.ph
    cur.execute(f"SELECT id, ts, level, doc FROM events WHERE kind = 'connection' AND doc LIKE {ph}",
                ('%"count"%',))
    folded, more = [], {}
    for rid, ts, level, doc in cur.fetchall():
        try:
            ev = json.loads(doc).get("event")
            n = fold(ev.get("count")) if isinstance(ev, dict) else None
        except (ValueError, AttributeError):  # a clipped doc: counted as one, as before
            n = None
        if n is not None:
            folded.append((n, rid))
            key = (bucket_start(ts), level or "", "connection")
            more[key] = more.get(key, 0) + n - 1
    cur.executemany(f"UPDATE events SET connects = {ph} WHERE id = {ph}", folded)
    cur.executemany(f"UPDATE event_buckets SET connects = connects + {ph} WHERE bucket_start = {ph} "
                    f"AND level = {ph} AND kind = {ph}", [(n, *k) for k, n in sorted(more.items())])


def _schema4(db, cur) -> None:
    """Schema 4: events.proc and the procs table (eventstore/procs.py) in
    place of the comm and exe indexes; saddr indexed for the rows that are
    not connections (eventstore/sources.py)."""
    from . import procs, sources
    procs.create(db, cur)
    procs.fill(db, cur)
    for stmt in _V4_INDEXES:
        cur.execute(stmt)
    sources.create(db, cur)


_V4_INDEXES = ["CREATE INDEX IF NOT EXISTS events_proc_ts ON events (proc, ts)",
               "DROP INDEX IF EXISTS events_comm_ts", "DROP INDEX IF EXISTS events_exe_ts"]


# version -> statements (or functions of the store and a cursor) that bring
# the previous version to it; applied in order, each version in one
# transaction, on every start (open()).
MIGRATIONS = {
    "sqlite": {1: _create("INTEGER PRIMARY KEY", "REAL"),
               2: _summary("sqlite", "INTEGER", " WITHOUT ROWID"),
               3: [_connects],
               4: [_schema4]},
    "postgres": {1: _create("BIGSERIAL PRIMARY KEY", "DOUBLE PRECISION"),
                 2: _summary("postgres", "BIGINT", ""),
                 3: [_connects],
                 4: [_schema4]},
}
