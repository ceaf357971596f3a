"""The default engine: records/events.sqlite3 in WAL mode. One writer (the
analyzer), any number of readers (dashboard, `netsentinel events`) that
never block it and that it never blocks."""

from __future__ import annotations

import grp
import os
import sqlite3
from pathlib import Path
from urllib.parse import quote

from ..timefmt import utc_now_iso
from .base import EventStore, Retention

BUSY_TIMEOUT_MS = 2000  # how long a write waits for another writer's lock before it reports
SIDECARS = ("-wal", "-shm")
WAL_LIMIT_BYTES = 16 << 20
WRITER_CACHE_KIB = 64 << 10
PAGE_BYTES = 16 << 10
DASHBOARD_GROUP = "netsentinel"  # the dashboard service's user and group


class SQLiteEventStore(EventStore):
    engine = "sqlite"
    ph = "?"
    # A statement of 32 rows (672 values: SQLite takes 32,766) instead of
    # one a row: its start, halt and reset were 4,000 instructions a row.
    insert_rows = 32
    # OR FAIL: a NOT NULL refused stops the statement without undoing its
    # earlier rows, which spares it a statement journal (a copy of every
    # page it changes, spilled to a temporary file past 64 KiB: three
    # writes a row, a third of the process's CPU in the kernel). Nothing is
    # kept half-done: add_rows rolls the whole transaction back on any error.
    insert_many = "INSERT OR FAIL"

    def __init__(self, path: str | os.PathLike, retention: Retention | None = None, *,
                 readonly: bool = False):
        self.path = Path(path)
        if readonly:
            conn = _reader(self.path)
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # 0640 from the first byte (SQLite gives its -wal and -shm the same
            # mode): the history names processes, users and peers. No symlink.
            fd = os.open(self.path, os.O_CREAT | os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC, 0o640)
            try:
                _share_with_dashboard(fd)
            finally:
                os.close(fd)
            conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000, check_same_thread=False)
        super().__init__(conn, retention)
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        if not readonly:
            # Before the first table (on an empty file; a store made before
            # keeps its pages): 16 KiB pages took a third less CPU per insert
            # than 4 KiB (fewer splits of the indexes' pages, fewer pages to
            # log) in bench/eventstore.py. auto_vacuum likewise.
            conn.execute(f"PRAGMA page_size = {PAGE_BYTES}")
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

    def columns(self, table: str) -> set[str]:
        return {r[1] for r in self.conn.execute(f"PRAGMA table_info({table})")}

    def file_bytes(self) -> int:
        return sum(p.stat().st_size for p in (self.path, *(Path(f"{self.path}{s}") for s in SIDECARS))
                   if p.exists())

    def _reclaim(self) -> None:
        self.conn.execute("PRAGMA incremental_vacuum(512)")
        self.conn.commit()


def _reader(path: Path) -> sqlite3.Connection:
    """mode=ro: a reader never creates the file, nor takes a write lock.
    A reader without write access to the directory (the dashboard's user)
    cannot create the -shm a WAL database needs once the writer has closed
    it and removed it; with no writer (no -wal), the file cannot change under
    it, so it is opened immutable instead."""
    uri = f"file:{quote(str(path))}?mode=ro"
    conn = sqlite3.connect(uri, uri=True, timeout=BUSY_TIMEOUT_MS / 1000, check_same_thread=False)
    try:
        conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
        return conn
    except sqlite3.OperationalError as e:
        conn.close()
        if "readonly" not in str(e) or Path(f"{path}-wal").exists():
            raise
    return sqlite3.connect(f"{uri}&immutable=1", uri=True, check_same_thread=False)


def _share_with_dashboard(fd: int) -> None:
    """Group DASHBOARD_GROUP, when it exists, so the dashboard (which runs as
    that user, scripts/systemd/netsentinel-dashboard.service) can read the
    history; other users cannot. SQLite gives -wal and -shm the same owner."""
    try:
        gid = grp.getgrnam(DASHBOARD_GROUP).gr_gid
    except KeyError:
        return
    st = os.fstat(fd)
    if st.st_gid != gid and os.geteuid() == 0:
        os.fchown(fd, -1, gid)
    os.fchmod(fd, 0o640)


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


def one_writer_process() -> bool:
    """For a process whose only SQLite connection is the store writer's,
    used by one thread at a time (the writer process, child.py), before it
    opens one: SQLite without its memory statistics and its per-connection
    mutexes, and None bound without Python's adaptation lookups (below).
    Debian's library counts every allocation under a global mutex
    and locks the connection on every call: a row's 13 text bindings, 28
    allocations and its step took about 6,000 instructions of locking (5 %
    of the writer's work; docs/benchmarks.md §6). Needs the library not yet
    in use (shut down and started again); False, and nothing changed, where
    it cannot (no ctypes, another library, a connection already open)."""
    global _one_writer
    if _one_writer:  # done (memory_used() reads 0 from then on: no second shutdown)
        return True
    import ctypes
    try:
        lib = ctypes.CDLL("libsqlite3.so.0")  # the one _sqlite3 is linked to, already loaded
        if lib.sqlite3_libversion_number() != sqlite3.sqlite_version_info[0] * 1000000 + \
                sqlite3.sqlite_version_info[1] * 1000 + sqlite3.sqlite_version_info[2]:
            return False
    except (OSError, AttributeError):
        return False
    lib.sqlite3_memory_used.restype = ctypes.c_int64
    if lib.sqlite3_memory_used() != 0:  # a connection is open: shutting down would break it
        return False
    if lib.sqlite3_shutdown() != 0:
        return False
    ok = (lib.sqlite3_config(_CONFIG_MULTITHREAD) == 0
          and lib.sqlite3_config(_CONFIG_MEMSTATUS, ctypes.c_int(0)) == 0)
    _one_writer = lib.sqlite3_initialize() == 0 and ok
    # Python's sqlite3 adapts every None it binds (a row's NULLs: connects,
    # often saddr or cmdline) through two attribute lookups that fail, each
    # formatting an AttributeError: about 1,000 instructions a None. An
    # adapter registered for None (None -> None, in C) is found first.
    sqlite3.register_adapter(type(None), {}.get)
    return _one_writer


_one_writer = False
_CONFIG_MULTITHREAD = 2  # sqlite3.h: SQLITE_CONFIG_MULTITHREAD
_CONFIG_MEMSTATUS = 9    # SQLITE_CONFIG_MEMSTATUS
