"""The store's writer: batches rows and writes them on a thread of its
own, and never lets the store stop the pipeline. A locked or unreachable
database keeps rows in memory (bounded) and is retried; a corrupt SQLite
file is set aside and a new one started; either way status() says what is
wrong. The analyzer runs it in a process of its own (child.py, fed by
process.StoreProcess); tests and bench/eventstore.py also run it in theirs."""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Callable

from pathlib import Path

from . import describe, is_postgres, open_store
from .base import EventStore, Retention
from .rows import row_of

MAX_BUFFERED = 50_000    # rows kept while the store is down; the oldest go first beyond this
REOPEN_EVERY_S = 5.0
RETENTION_EVERY_S = 1.0  # one small retention step at most this often
# Rows per transaction: an insert touches pages all over the address and
# process indexes, each logged once per transaction it changes in, so
# larger transactions write fewer pages per row (5,000: 2.9 KB of disk
# writes a row; 20,000: 1.9 KB and a sixth less CPU; bench/eventstore.py).
WRITE_BATCH = 20_000


def is_bad_data(e: BaseException) -> bool:
    """Refused for what a row holds (it would fail on every retry), not for
    the store's state (locked, unreachable, damaged: those are retried)."""
    import sqlite3
    if isinstance(e, (TypeError, ValueError, UnicodeError, sqlite3.IntegrityError,
                      sqlite3.InterfaceError, sqlite3.DataError, sqlite3.ProgrammingError)):
        return True
    try:
        import psycopg
    except ImportError:
        return False
    return isinstance(e, (psycopg.DataError, psycopg.IntegrityError, psycopg.ProgrammingError))


class StoreWriter:
    def __init__(self, dsn: str, warn: Callable[[str], None], retention: Retention | None = None,
                 opener: Callable[..., EventStore] = open_store, *,
                 max_buffered: int | None = MAX_BUFFERED,
                 on_flush: Callable[[], None] | None = None,
                 intake: Callable[[], list[tuple]] | None = None):
        self.dsn = dsn
        # None: the caller bounds what it adds (child.py waits for room instead).
        self.max_buffered = max_buffered
        self.on_flush = on_flush  # after every write attempt (child.py reports its status)
        self.intake = intake  # more rows, asked for by flush() on the writer's thread (child.py)
        self.warn = warn
        self.retention = retention or Retention()
        self._opener = opener
        self.db: EventStore | None = None
        self._pending: deque = deque()
        self._next_open = 0.0
        self._next_retention = 0.0
        self.rows_written = 0
        self.rows_dropped = 0
        self.rows_expired = 0
        self._written_at_retention = 0
        self.error: str | None = None
        self.set_aside: list[str] = []
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._wake = threading.Event()
        self._stop = threading.Event()

    # -------------------------------------------------- the analyzer's side
    def start(self) -> None:
        """Write on a thread of its own: a store that waits (a lock, a server
        that does not answer) never delays the analyzer's other records."""
        self._thread = threading.Thread(target=self._run, name="event-store", daemon=True)
        self._thread.start()

    def submit(self, rows: list[tuple], entries=(), now: float | None = None) -> None:
        """Queue rows, and verdict entries as rows analysed at `now`;
        written by the thread (start()), else at once."""
        if entries:
            now = time.time() if now is None else now
            rows = [*rows, *(row_of(e, now) for e in entries)]
        self.add(rows)
        if self._thread is not None:
            self._wake.set()
        else:
            self.flush()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(REOPEN_EVERY_S)
            self._wake.clear()
            self._flush_and_tell()
        self._next_open = 0.0  # what came before close(): one more try at once, past the retry delay
        self._flush_and_tell()

    def _flush_and_tell(self) -> None:
        self.flush()
        if self.on_flush is not None:
            self.on_flush()

    def buffered(self) -> int:
        return len(self._pending)

    def add(self, rows: list[tuple]) -> None:
        with self._lock:
            self._pending.extend(rows)
            over = 0 if self.max_buffered is None else len(self._pending) - self.max_buffered
            for _ in range(max(over, 0)):
                self._pending.popleft()
        if over > 0:
            self.rows_dropped += over
            self._report(f"event store down and its buffer of {self.max_buffered} rows full: dropping "
                         "the oldest (rows_dropped in analyzer_status.json)")

    def flush(self, now: float | None = None) -> None:
        if self.intake is not None:
            self.add(self.intake())
        now = time.monotonic() if now is None else now
        if self.db is None and not self._open(now):
            return
        try:
            while True:
                with self._lock:
                    pending = self._pending
                    if len(pending) <= WRITE_BATCH:  # the usual: all of it, in C
                        batch = list(pending)
                        pending.clear()
                    else:
                        batch = [pending.popleft() for _ in range(WRITE_BATCH)]
                if not batch:
                    break
                try:
                    self._write(batch)
                except Exception:
                    with self._lock:  # back in front, in order, for the retry
                        self._pending.extendleft(reversed(batch))
                    raise
            if now >= self._next_retention:
                self._retention(now)
            if self.error:
                self.warn(f"event store {describe(self.dsn)} writes again")
            self.error = None
        except Exception as e:  # any engine error: the pipeline goes on (module docstring)
            self._failed(e, now)

    def _write(self, batch: list[tuple]) -> None:
        try:
            self.db.add_rows(batch)
            self.rows_written += len(batch)
        except Exception as e:
            if not is_bad_data(e):
                raise
            self._one_by_one(batch)

    def _one_by_one(self, batch: list[tuple]) -> None:
        """A batch the engine refused for its data, not for its state: write
        it row by row and drop only the rows refused, so one bad row cannot
        block the store by failing its batch on every retry."""
        for row in batch:
            try:
                self.db.add_rows([row])
                self.rows_written += 1
            except Exception as e:
                if not is_bad_data(e):
                    raise
                self.rows_dropped += 1
                self.warn(f"event store refused a row ({type(e).__name__}: "
                          f"{' '.join(str(e).split())[:200]}); dropped, counted in rows_dropped")

    def _retention(self, now: float) -> None:
        """Small delete steps, each its own short transaction; as many per
        second as rows came in since the last time (plus one), so retention
        keeps pace with a burst without one long delete holding the writer."""
        self._next_retention = now + RETENTION_EVERY_S
        budget = self.rows_written - self._written_at_retention
        self._written_at_retention = self.rows_written
        while True:
            deleted = self.db.retention_step()
            self.rows_expired += deleted
            budget -= deleted
            if not deleted or budget <= 0:
                return

    def _open(self, now: float) -> bool:
        for _ in range(2):  # a damaged file set aside on the first try: a new one at once
            if now < self._next_open:
                return False
            self._next_open = now + REOPEN_EVERY_S
            try:
                self.db = self._opener(self.dsn, self.retention)
                return True
            except Exception as e:  # unreachable server, bad file, newer schema: report, retry
                self._failed(e, now)
        return False

    def _failed(self, e: Exception, now: float) -> None:
        from .sqlite import SQLiteEventStore, is_corrupt, set_aside
        msg = " ".join(f"{type(e).__name__}: {e}".split())
        db, self.db = self.db, None
        if db is not None:
            db.close()
        path = db.path if isinstance(db, SQLiteEventStore) else (
            None if is_postgres(self.dsn) else Path(self.dsn.removeprefix("sqlite://")))
        if path is not None and is_corrupt(e) and path.exists():
            aside = set_aside(path)
            self.set_aside.append(str(aside))
            self._next_open = now  # a fresh file at once
            self._report(f"event store {path} is damaged ({msg}); set aside as {aside.name}, "
                         "starting a new one")
            return
        self._report(f"event store {describe(self.dsn)} failed: {msg}; rows are kept in memory "
                     f"and the store retried every {REOPEN_EVERY_S:g}s")
        self._next_open = max(self._next_open, now + REOPEN_EVERY_S)

    def _report(self, msg: str) -> None:
        if msg != self.error:  # one line per new problem, not per flush
            self.warn(msg)
        self.error = msg

    def status(self) -> dict:
        return {"dsn": describe(self.dsn), "ok": self.error is None,
                "error": self.error, "rows_written": self.rows_written,
                "rows_buffered": len(self._pending), "rows_dropped": self.rows_dropped,
                "rows_expired": self.rows_expired, "set_aside": list(self.set_aside)}

    def close(self, wait_s: float = 30.0) -> None:
        """Stop the thread after it wrote what was queued (at most wait_s:
        a store that does not answer must not hold the analyzer's exit)."""
        if self._thread is not None:
            self._stop.set()
            self._wake.set()
            self._thread.join(wait_s)
            if self._thread.is_alive():
                self.warn(f"event store {describe(self.dsn)}: {len(self._pending)} rows not "
                          f"written within {wait_s:g}s of exit")
                return
        if self.db is not None:
            self.db.close()
            self.db = None
