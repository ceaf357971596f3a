"""Schema 4: the source-address index holds only the rows that are not
connections (flows, threats, decisions: a flood's or a threat's source).
A connection's saddr is this host's own address, the same few values in
nearly every row: indexing it cost every insert a B-tree descent and insert
(about 5,800 instructions a row, docs/benchmarks.md §6) for a filter that
matches most connections anyway, which a read in time order serves as well.

To keep a source or address filter exact, conn_saddrs lists the addresses
connections have had as their source (a handful: the host's addresses; a
local user can bind others, so past MAX_SOURCES the store notes that it
stopped listing them and every address is then treated as one). A filter
on an address in the list also reads the connections (query.where); on
any other address it reads the partial index alone."""

from __future__ import annotations

from operator import itemgetter

from .schema import COLUMNS

MAX_SOURCES = 4096
FULL_KEY = "conn_saddrs_full"  # in meta: the list stopped at MAX_SOURCES
_KIND_SADDR = itemgetter(COLUMNS.index("kind"), COLUMNS.index("saddr"))
PARTIAL_WHERE = "kind <> 'connection'"


def create(db, cur) -> None:
    """The table, filled from the rows a schema-3 store has, and the
    partial index in place of the full one (idempotent)."""
    cur.execute("CREATE TABLE IF NOT EXISTS conn_saddrs (addr TEXT PRIMARY KEY)")
    cur.execute("SELECT DISTINCT saddr FROM events WHERE kind = 'connection' AND saddr IS NOT NULL")
    found = [r[0] for r in cur.fetchall()]
    _add(db, cur, found)
    cur.execute("DROP INDEX IF EXISTS events_saddr_ts")
    cur.execute(f"CREATE INDEX events_saddr_ts ON events (saddr, ts) WHERE {PARTIAL_WHERE}")


def _add(db, cur, addrs) -> None:
    ph = db.ph
    cur.execute("SELECT COUNT(*) FROM conn_saddrs")
    room = MAX_SOURCES - cur.fetchone()[0]
    addrs = sorted(addrs)
    if len(addrs) > room:  # the list would be endless: every address counts as one from now on
        cur.execute(f"DELETE FROM meta WHERE key = {ph}", (FULL_KEY,))
        cur.execute(f"INSERT INTO meta (key, value) VALUES ({ph}, '1')", (FULL_KEY,))
        addrs = addrs[:max(room, 0)]
    cur.executemany(f"INSERT INTO conn_saddrs (addr) VALUES ({ph}) ON CONFLICT (addr) DO NOTHING",
                    [(a,) for a in addrs])


class Known:
    """The connection sources this writer has listed (the list only grows)."""

    def __init__(self, db):
        self.db = db
        self._seen: set = set()

    def note(self, cur, rows: list[tuple]) -> None:
        """List the connection sources of rows not yet listed, in the
        caller's transaction."""
        pairs = set(map(_KIND_SADDR, rows))
        new = {a for k, a in pairs if k == "connection" and a is not None} - self._seen
        if new:
            _add(self.db, cur, new)
            self._seen |= new
            if len(self._seen) > MAX_SOURCES:
                self._seen.clear()


    def forget(self) -> None:
        self._seen.clear()


def is_source(db, addr: str) -> bool:
    """addr has been a connection's source (or the list is full): a filter
    on it must read connections too."""
    return bool(db._all(f"SELECT 1 FROM conn_saddrs WHERE addr = {db.ph} UNION ALL "
                        f"SELECT 1 FROM meta WHERE key = {db.ph}", [addr, FULL_KEY]))
