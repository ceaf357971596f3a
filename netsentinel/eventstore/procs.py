"""Schema 4: a row's process as one integer. `procs` maps an id to the
(comm, exe) pair it stands for, and events.proc holds the id: one (proc, ts)
index serves both the process-name and the executable filters, where two
text indexes, (comm, ts) and (exe, ts), cost every insert two B-tree
descents and inserts (about 5,000 instructions a row, 4 % of the writer's
work; docs/benchmarks.md §6). The rows keep comm and exe for reading.

The id is a keyed hash of the pair (BLAKE2b, 8 bytes, with a random key
each store keeps in meta): any writer of a fleet computes the same id with
no lookup and no counter to share, and nobody who lacks the key can make two
pairs collide (a local user names their processes). Every insert adds its
batch's pairs to procs in its own transaction; retention removes a pair
when the last row naming it goes, so the table follows the rows however
many names a hostile user makes up."""

from __future__ import annotations

import hashlib
import os
from operator import add, itemgetter

from .schema import COLUMNS

PROCS_VERSION = 4
KEY_NAME = "proc_key"
_PAIR = itemgetter(COLUMNS.index("comm"), COLUMNS.index("exe"))
MAX_CACHED = 1 << 16  # pairs whose id this writer remembers; then it starts afresh
_NONE = (None,)


def create(db, cur) -> None:
    """Schema 4's tables and key (idempotent: SQLite runs DDL outside the
    migration's transaction); the rows' ids are filled by fill()."""
    big = "BIGINT" if db.engine == "postgres" else "INTEGER"
    if "proc" not in db.columns("events"):
        cur.execute(f"ALTER TABLE events ADD COLUMN proc {big}")
    cur.execute(f"CREATE TABLE IF NOT EXISTS procs (id {big} PRIMARY KEY, comm TEXT, exe TEXT)")
    cur.execute("CREATE INDEX IF NOT EXISTS procs_comm ON procs (comm)")
    cur.execute("CREATE INDEX IF NOT EXISTS procs_exe ON procs (exe)")
    cur.execute(f"SELECT value FROM meta WHERE key = {db.ph}", (KEY_NAME,))
    if cur.fetchone() is None:
        cur.execute(f"INSERT INTO meta (key, value) VALUES ({db.ph}, {db.ph})",
                    (KEY_NAME, os.urandom(16).hex()))


def fill(db, cur) -> None:
    """Every row's proc, one UPDATE a distinct pair (through the comm and
    exe indexes schema 3 had: schema._schema4 drops them after this, and
    builds (proc, ts) once the ids are in)."""
    ids = Ids(db)
    ph = db.ph
    cur.execute("SELECT DISTINCT comm, exe FROM events WHERE proc IS NULL "
                "AND (comm IS NOT NULL OR exe IS NOT NULL)")
    pairs = cur.fetchall()
    known = ids.of(cur, {tuple(p) for p in pairs})
    for comm, exe in pairs:
        conds = " AND ".join(f"{c} = {ph}" if v is not None else f"{c} IS NULL"
                             for c, v in (("comm", comm), ("exe", exe)))
        cur.execute(f"UPDATE events SET proc = {ph} WHERE {conds} AND proc IS NULL",
                    (*known[(comm, exe)], *(v for v in (comm, exe) if v is not None)))


class Ids:
    """(comm, exe) -> (id,) for one store, remembered; new pairs are added
    to procs by of(), inside the caller's transaction."""

    def __init__(self, db):
        self.db = db
        self._key: bytes | None = None
        self._ids: dict = {(None, None): _NONE}

    def _hash(self, pair: tuple) -> int:
        # repr: None and the text 'None' differ; surrogatepass: any str encodes
        data = repr(pair).encode("utf-8", "surrogatepass")
        return int.from_bytes(hashlib.blake2b(data, digest_size=8, key=self._key).digest(),
                              "little", signed=True)

    def of(self, cur, pairs: set) -> dict:
        """{pair: (id,)} for `pairs`, each also in procs once this
        transaction commits (whatever retention or another writer removed)."""
        ph = self.db.ph
        if self._key is None:  # with the caller's cursor: inside its transaction
            cur.execute(f"SELECT value FROM meta WHERE key = {ph}", (KEY_NAME,))
            self._key = bytes.fromhex(cur.fetchone()[0])
        ids = self._ids
        if len(ids) > MAX_CACHED:
            ids.clear()
            ids[(None, None)] = _NONE
        for p in pairs - ids.keys():
            ids[p] = (self._hash(p),)
        cur.executemany(f"INSERT INTO procs (id, comm, exe) VALUES ({ph}, {ph}, {ph}) "
                        "ON CONFLICT (id) DO NOTHING",
                        sorted(((ids[p][0], *p) for p in pairs if p != (None, None)),
                               key=itemgetter(0)))
        return ids

    def with_ids(self, cur, rows: list[tuple]) -> list[tuple]:
        """rows with each one's proc id appended (its pair in procs)."""
        keys = list(map(_PAIR, rows))
        self.db._lock_procs(cur, exclusive=False)
        ids = self.of(cur, set(keys))
        return list(map(add, rows, map(ids.__getitem__, keys)))


def prune(db, cur, gone_ids) -> None:
    """Remove the pairs no row names any more, of those the rows just
    deleted named (inside retention's transaction)."""
    ids = sorted({i for i in gone_ids if i is not None})
    if not ids:
        return
    db._lock_procs(cur, exclusive=True)
    ph = db.ph
    cur.executemany(f"DELETE FROM procs WHERE id = {ph} AND NOT EXISTS "
                    f"(SELECT 1 FROM events WHERE events.proc = {ph})", [(i, i) for i in ids])


def ids_where(db, column: str, value: str) -> list[int]:
    """The ids of the pairs whose `column` (comm or exe) is value: a query
    then names them (one id: the (proc, ts) index in time order, no sort)."""
    return [r[0] for r in db._all(f"SELECT id FROM procs WHERE {column} = {db.ph} ORDER BY id",
                                  [value])]
