"""The event store's one table, its indexes and its migrations, for both
engines. A row is one thing that happened, stamped with the event's own time
(`ts`, Unix seconds), not with when the analyzer judged it (`analyzed_at`):

  kind       connection | flow | threat | decision
  level, category, confidence, verdict_source, backend, reason
  pid, uid, comm, exe, cmdline     the process (connections)
  saddr, daddr, dport              addresses; for a flow, saddr is its source
  ref        the analyzer's entry id, or a threat id for threat/decision rows
  doc        the whole record as JSON, for export and the detail view
"""

from __future__ import annotations

SCHEMA_VERSION = 1

# Column order of an inserted row (rows.row_of builds tuples in this order).
COLUMNS = ("ts", "analyzed_at", "kind", "level", "category", "confidence", "verdict_source",
           "backend", "reason", "pid", "uid", "comm", "exe", "cmdline", "saddr", "daddr", "dport",
           "ref", "doc")

_TYPES = {"ts": "REAL NOT NULL", "analyzed_at": "REAL NOT NULL", "kind": "TEXT NOT NULL",
          "confidence": "REAL", "pid": "INTEGER", "uid": "INTEGER", "dport": "INTEGER",
          "doc": "TEXT NOT NULL"}

# Indexes cost every insert (the store must keep up with 50k events/s), so
# only the filters people follow over time get a full one: process, exe,
# destination, source (investigations), and time itself. Levels above INFO
# and kinds other than connection are rare: partial indexes hold only those
# rows, nearly free to keep; query.where() repeats their WHERE so both
# engines use them. Port, user, category and text are read within a time
# range from the ts index.
INDEXED = ("comm", "exe", "daddr", "saddr")
PARTIAL = {"level": "level <> 'INFO'", "kind": "kind <> 'connection'"}


def _create(id_type: str, real: str) -> list[str]:
    cols = ",\n  ".join(f"{c} {_TYPES.get(c, 'TEXT')}".replace("REAL", real) for c in COLUMNS)
    stmts = [f"CREATE TABLE events (\n  id {id_type},\n  {cols}\n)",
             # level and kind ride along: timelines and counts by level or kind
             # over a range read this index alone, never the rows.
             "CREATE INDEX events_ts ON events (ts, level, kind)"]
    stmts += [f"CREATE INDEX events_{c}_ts ON events ({c}, ts)" for c in INDEXED]
    stmts += [f"CREATE INDEX events_{c}_ts ON events ({c}, ts) WHERE {w}" for c, w in PARTIAL.items()]
    return stmts


# version -> statements that bring the previous version to it; applied in
# order, each version in one transaction, on every start (open()).
MIGRATIONS = {
    "sqlite": {1: _create("INTEGER PRIMARY KEY", "REAL")},
    "postgres": {1: _create("BIGSERIAL PRIMARY KEY", "DOUBLE PRECISION")},
}
