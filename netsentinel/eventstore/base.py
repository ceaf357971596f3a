"""What both engines share: migrations, inserts, search, investigation,
retention. An engine supplies a DB-API connection, its placeholder and how
big its data is."""

from __future__ import annotations

import time
from dataclasses import dataclass
from itertools import chain

from ..levels import LEVELS
from . import procs, sources, summary
from .query import Query, page_sql, where
from .rows import as_dict
from .schema import COLUMNS, MIGRATIONS, SCHEMA_VERSION

DEFAULT_MAX_AGE_DAYS = 30.0
DEFAULT_MAX_BYTES = 1 << 30
RETENTION_BATCH = 2000  # rows deleted per step: a short transaction, the writer barely waits


@dataclass
class Retention:
    max_age_days: float = DEFAULT_MAX_AGE_DAYS
    max_bytes: int = DEFAULT_MAX_BYTES


class SchemaTooNew(Exception):
    """The database was written by a newer NetSentinel: refuse rather than guess."""


class EventStore:
    engine = "?"
    ph = "?"
    insert_rows = 1  # rows an INSERT statement takes (the rest of a batch: one at a time)
    insert_many = "INSERT"  # ... how that statement begins

    def __init__(self, conn, retention: Retention | None = None):
        self.conn = conn
        self.retention = retention or Retention()
        cols = (*COLUMNS, "proc")  # proc: appended by procs.Ids.with_ids
        one = f"({', '.join(self.ph for _ in cols)})"
        self._insert = f"INSERT INTO events ({', '.join(cols)}) VALUES {one}"
        self._insert_k = (f"{self.insert_many} INTO events ({', '.join(cols)}) VALUES "
                          + ", ".join([one] * self.insert_rows))
        self._procs = procs.Ids(self)
        self._sources = sources.Known(self)
        self._version: int | None = None  # the schema's, asked once (a reader does not migrate)
        self._summary: bool | None = None  # event_buckets there (schema 2+)

    # ------------------------------------------------------------ schema
    def migrate(self) -> int:
        """Bring the schema to SCHEMA_VERSION; the version found before."""
        cur = self.conn.cursor()
        cur.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        self.conn.commit()
        cur.execute(f"SELECT value FROM meta WHERE key = {self.ph}", ("schema_version",))
        row = cur.fetchone()
        found = int(row[0]) if row else 0
        if found > SCHEMA_VERSION:
            raise SchemaTooNew(f"event store schema version {found} is newer than this "
                               f"NetSentinel's {SCHEMA_VERSION}: upgrade NetSentinel")
        for version in range(found + 1, SCHEMA_VERSION + 1):
            for stmt in MIGRATIONS[self.engine][version]:
                stmt(self, cur) if callable(stmt) else cur.execute(stmt)
            cur.execute(f"DELETE FROM meta WHERE key = {self.ph}", ("schema_version",))
            cur.execute(f"INSERT INTO meta (key, value) VALUES ({self.ph}, {self.ph})",
                        ("schema_version", str(version)))
            self.conn.commit()
        self._summary, self._version = True, SCHEMA_VERSION
        return found

    def columns(self, table: str) -> set[str]:
        """The columns `table` has (a migration adds what is missing)."""
        raise NotImplementedError

    def schema_version(self) -> int:
        cur = self.conn.cursor()
        cur.execute(f"SELECT value FROM meta WHERE key = {self.ph}", ("schema_version",))
        row = cur.fetchone()
        return int(row[0]) if row else 0

    # ------------------------------------------------------------ writing
    def add_rows(self, rows: list[tuple]) -> None:
        """Insert a batch and count it into the summary, in one transaction
        (all or none)."""
        if not rows:
            return
        try:
            cur = self.conn.cursor()
            self._insert_rows(cur, rows)
            summary.add(self, cur, rows)
            self.conn.commit()
        except Exception:
            self._rollback()
            raise

    def _insert_rows(self, cur, rows: list[tuple]) -> None:
        self._sources.note(cur, rows)
        rows = self._procs.with_ids(cur, rows)
        # insert_rows rows a statement, in their order (the ids follow it):
        # each statement's start and halt, paid once for all of them.
        k = self.insert_rows
        n = len(rows) - len(rows) % k
        if k > 1 and n:
            cur.executemany(self._insert_k, [tuple(chain.from_iterable(rows[i:i + k]))
                                             for i in range(0, n, k)])
            rows = rows[n:]
        cur.executemany(self._insert, rows)

    def _lock_procs(self, cur, exclusive: bool) -> None:
        """Writers of a fleet against retention's pruning of procs (PostgreSQL)."""

    def _rollback(self) -> None:
        self._sources.forget()  # what it listed in this transaction is gone with it
        try:
            self.conn.rollback()
        except Exception:  # the connection is gone too; the caller reports the first error
            pass

    # ------------------------------------------------------------ reading
    def search(self, q: Query) -> list[dict]:
        w, params = self._where(q)
        p, pparams = page_sql(q, self.ph)
        # A store before schema 3 (its writer not yet upgraded) has no connects: NULL, one.
        cols = COLUMNS if self._schema() >= summary.CONNECTS_VERSION else (
            *(c for c in COLUMNS if c != "connects"), "NULL")
        return [as_dict(r) for r in self._all(f"SELECT id, {', '.join(cols)} FROM events{w}{p}",
                                             params + pparams)]

    def _where(self, q: Query) -> tuple[str, list]:
        """query.where() for this store's schema: a process or exe filter
        names the procs ids from schema 4 on."""
        if self._schema() < procs.PROCS_VERSION:
            return where(q, self.ph)
        return where(q, self.ph, lambda col, value: procs.ids_where(self, col, value),
                     lambda addr: sources.is_source(self, addr))

    def _schema(self) -> int:
        if self._version is None:
            found = self._all(f"SELECT value FROM meta WHERE key = {self.ph}", ["schema_version"])
            self._version = int(found[0][0]) if found else 0
        return self._version

    def has_summary(self) -> bool:
        """A store from before schema 2 (a reader opened before its writer
        migrated it) has no summary: its figures come from the rows."""
        if self._summary is None:
            self._summary = self._schema() >= summary.SUMMARY_VERSION
        return self._summary

    def _measure(self) -> str:
        """What a timeline counts: connects (a folded event counts its
        `count`), or rows in a store from before schema 3."""
        return "connects" if self._schema() >= summary.CONNECTS_VERSION else "n"

    def _summarised(self, q: Query, width: int | None = None) -> bool:
        return ((width is None or width % summary.BUCKET_S == 0) and summary.answers(q)
                and self.has_summary())

    def count(self, q: Query) -> int:
        if self._summarised(q):
            return sum(summary.grouped(self, q, ()).values())
        w, params = self._where(q)
        return int(self._all("SELECT COUNT(*) FROM events" + w, params)[0][0])

    def counts_by(self, column: str, q: Query, top: int = 10) -> list[tuple]:
        """[(value, rows)] most frequent first: for summaries and the Overview."""
        if column not in COLUMNS:
            raise ValueError(f"unknown column {column!r}")
        if column in ("level", "kind") and self._summarised(q):
            by = summary.grouped(self, q, (column,))
            return sorted(((k[0], n) for k, n in by.items()),
                          key=lambda r: (-r[1], r[0] is not None, r[0] or ""))[:int(top)]
        w, params = self._where(q)
        return [tuple(r) for r in self._all(
            f"SELECT {column}, COUNT(*) AS n FROM events{w} GROUP BY {column} "
            f"ORDER BY n DESC, {column} LIMIT {int(top)}", params)]

    def top(self, columns: tuple[str, ...], q: Query, top: int = 10,
            latest: int | None = None) -> list[tuple]:
        """[(*values, rows, worst level, last ts)] for the most frequent
        combinations of `columns` that are all set (no blank destination row).
        latest: count only the newest `latest` matching rows (read through the
        time index): a bounded cost however many rows the range holds."""
        bad = [c for c in columns if c not in COLUMNS]
        if bad:
            raise ValueError(f"unknown column {bad[0]!r}")
        w, params = self._where(q)
        cols = ", ".join(columns)
        # Columns of text are also never blank: '' is as empty as NULL to a reader.
        set_ = " AND ".join(f"{c} IS NOT NULL" + ("" if c in ("dport", "uid", "pid") else f" AND {c} <> ''")
                            for c in columns)
        worst = ("MAX(CASE level " + " ".join(f"WHEN '{lv}' THEN {i}" for i, lv in enumerate(LEVELS))
                 + " ELSE 0 END)")
        source = "events"
        if latest is not None:
            source = (f"(SELECT {cols}, level, ts FROM events{w} ORDER BY ts DESC "
                      f"LIMIT {int(latest)}) AS recent")
            w = ""   # the filter is inside the subquery
        rows = self._all(f"SELECT {cols}, COUNT(*) AS n, {worst}, MAX(ts) FROM {source}"
                         f"{w}{' AND ' if w else ' WHERE '}{set_} GROUP BY {cols} "
                         f"ORDER BY n DESC, MAX(ts) DESC LIMIT {int(top)}", params)
        return [(*r[:-2], LEVELS[int(r[-2])], r[-1]) for r in rows]

    def _grouped(self, q: Query, cols: tuple[str, ...], width: int | None = None) -> dict:
        measure = self._measure()
        if self._summarised(q, width):
            return summary.grouped(self, q, cols, width, measure)
        return summary.from_rows(self, q, cols, width, measure)

    def timeline(self, q: Query, bucket_s: int) -> list[tuple]:
        """[(bucket start, level, connects)] for a plot (a row that is not a
        folded connection event is one), aggregated in the database (from
        the summary when bucket_s is whole minutes)."""
        by = self._grouped(q, ("t", "level"), int(bucket_s))
        return [(t, lv, by[(t, lv)]) for t, lv in sorted(by, key=_by_time)]

    def timelines_by_kind(self, q: Query, bucket_s: int) -> dict[str, list[tuple]]:
        """{kind: [(bucket start, level, connects)]}: timeline() for every kind in
        one pass over the summary or the time index (the Overview draws two)."""
        by = self._grouped(q, ("t", "kind", "level"), int(bucket_s))
        out: dict[str, list[tuple]] = {}
        for t, kind, lv in sorted(by, key=lambda k: (k[1], *_by_time((k[0], k[2])))):
            out.setdefault(kind, []).append((t, lv, by[(t, kind, lv)]))
        return out

    def investigate(self, q: Query) -> dict:
        """Everything one process/exe/address did over the range: first and
        last seen, rows by kind and level, top destinations, sources, ports."""
        w, params = self._where(q)
        first, last, n = self._all(f"SELECT MIN(ts), MAX(ts), COUNT(*) FROM events{w}", params)[0]
        return {"rows": int(n), "first_ts": first, "last_ts": last,
                **{f"by_{c}": self.counts_by(c, q) for c in
                   ("kind", "level", "category", "daddr", "saddr", "dport", "exe")}}

    def _all(self, sql: str, params: list) -> list:
        cur = self.conn.cursor()
        try:
            cur.execute(sql, params)
            return cur.fetchall()
        finally:
            self._end_read()

    def _end_read(self) -> None:
        """Readers must not hold a snapshot open between queries."""

    # ---------------------------------------------------------- retention
    def size_bytes(self) -> int:
        raise NotImplementedError

    def retention_step(self, now: float | None = None) -> int:
        """Delete at most RETENTION_BATCH of the oldest rows that are past
        the age limit, or while the data is over the size cap, and count them
        out of the summary in the same transaction; rows deleted."""
        now = time.time() if now is None else now
        cutoff = now - self.retention.max_age_days * 86400
        cur = self.conn.cursor()
        # RETURNING: the rows this transaction deleted, none that another
        # writer of a fleet deleted first, so each is counted out once.
        oldest = (f"DELETE FROM events WHERE id IN (SELECT id FROM events{{}} ORDER BY ts "
                  f"LIMIT {RETENTION_BATCH}) RETURNING ts, level, kind, connects, proc")
        try:
            cur.execute(oldest.format(f" WHERE ts < {self.ph}"), (cutoff,))
            gone = cur.fetchall()
            if not gone and self.size_bytes() > self.retention.max_bytes:
                cur.execute(oldest.format(""))
                gone = cur.fetchall()
            summary.subtract(self, cur, [g[:4] for g in gone])
            procs.prune(self, cur, [g[4] for g in gone])
            self.conn.commit()
        except Exception:
            self._rollback()
            raise
        if gone:
            self._reclaim()
        return len(gone)

    def _reclaim(self) -> None:
        """Give freed space back after a delete (engine-specific)."""

    def close(self) -> None:
        try:
            self.conn.close()
        except Exception:  # closing a broken connection: nothing left to do
            pass


def _by_time(row: tuple) -> tuple:
    return row[0], row[1] is not None, row[1] or ""
