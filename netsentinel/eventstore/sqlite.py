"""The default engine: records/events.sqlite3 in WAL mode. One writer (the
analyzer), any number of readers (dashboard, `netsentinel events`) that
never block it and that it never blocks."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from ..timefmt import utc_now_iso
from .base import EventStore, Retention

BUSY_TIMEOUT_MS = 2000  # how long a write waits for another writer's lock before it reports
SIDECARS = ("-wal", "-shm")
WAL_LIMIT_BYTES = 16 << 20
WRITER_CACHE_KIB = 64 << 10


class SQLiteEventStore(EventStore):
    engine = "sqlite"
    ph = "?"
    floor = "CAST({} AS INTEGER)"  # ts >= 0, so truncation is floor

    def __init__(self, path: str | os.PathLike, retention: Retention | None = None, *,
                 readonly: bool = False):
        self.path = Path(path)
        if readonly:
            # mode=ro: a reader never creates the file, nor takes a write lock.
            conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=BUSY_TIMEOUT_MS / 1000,
                                   check_same_thread=False)
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000, check_same_thread=False)
            os.chmod(self.path, 0o640)  # history names processes and peers: not for every local user
        super().__init__(conn, retention)
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        if not readonly:
            # Before the first table: auto_vacuum only takes effect on an empty file.
            conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
            if conn.execute("PRAGMA journal_mode = WAL").fetchone()[0].lower() != "wal":
                raise sqlite3.OperationalError(f"{self.path}: cannot switch to WAL mode")
            # WAL + NORMAL: a crash may lose the last batch, never corrupts the file.
            conn.execute("PRAGMA synchronous = NORMAL")
            # The WAL is reused after each checkpoint; past this it is cut back,
            # so the cap on the data is (nearly) the cap on the disk.
            conn.execute(f"PRAGMA journal_size_limit = {WAL_LIMIT_BYTES}")
            # The indexes' hot pages stay in memory: inserts touch them all.
            conn.execute(f"PRAGMA cache_size = -{WRITER_CACHE_KIB}")
            conn.execute("PRAGMA quick_check(1)").fetchone()  # a torn file fails here, not mid-run
            self.migrate()

    def size_bytes(self) -> int:
        """Pages in use (freed pages are reused, then given back by _reclaim)."""
        c = self.conn.cursor()
        pages = c.execute("PRAGMA page_count").fetchone()[0]
        free = c.execute("PRAGMA freelist_count").fetchone()[0]
        return (pages - free) * c.execute("PRAGMA page_size").fetchone()[0]

    def file_bytes(self) -> int:
        return sum(p.stat().st_size for p in (self.path, *(Path(f"{self.path}{s}") for s in SIDECARS))
                   if p.exists())

    def _reclaim(self) -> None:
        self.conn.execute("PRAGMA incremental_vacuum(512)")
        self.conn.commit()


def set_aside(path: Path) -> Path:
    """Move a corrupt database (and its WAL files) out of the way, as
    RecordsStore does for a JSON file: NAME.corrupt-<UTC time>."""
    stamp = utc_now_iso().replace(":", "")
    aside = path.with_name(f"{path.name}.corrupt-{stamp}")
    for suffix in ("", *SIDECARS):
        src = Path(f"{path}{suffix}")
        if src.exists():
            os.replace(src, f"{aside}{suffix}")
    return aside


def is_corrupt(e: BaseException) -> bool:
    """A damaged file (set it aside), as opposed to a busy one (wait)."""
    if not isinstance(e, sqlite3.DatabaseError):
        return False
    msg = str(e).lower()
    if isinstance(e, sqlite3.OperationalError) and ("locked" in msg or "busy" in msg):
        return False
    return any(s in msg for s in ("malformed", "not a database", "corrupt", "disk image",
                                  "no such table"))
