"""The event store's writer process (started by process.StoreProcess, one
per analyzer). It reads frames of verdicts from its stdin, converts them to
rows (rows.row_of) and writes them through a StoreWriter, so row conversion,
inserts and the summary's counting run on a core of their own instead of in
the analyzer's interpreter, where they took the GIL from its reader.

stdin:  frames (frames.py: the pipe's format, shared with process.py):
        first the settings ({dsn, max_age_days, max_bytes}: not on the
        command line, where every user could read a DSN's password), then
        batches of (analysed-at time, [ready rows], [[verdict entries], in
        batches as the analyzer recorded them]).
stdout: JSON lines: {"status": StoreWriter.status()} after a write, at
        most every STATUS_EVERY_S (at once when the store's health changes,
        and at exit), {"warn": line} for a problem to report.
        rows_written + rows_dropped counts the rows done, in the order they
        came, which is how the parent knows what it may forget (and what to
        send again to a new writer if this one dies).
The writer takes the frames read when they make WAKE_BYTES or the oldest
has waited HOLD_S: one transaction for a few thousand rows (a frame each
cost SQLite a quarter more per row) and the parent's reading thread woken
a few times a second, not per frame.
EOF on stdin: write what is buffered (as StoreWriter.close does), report,
exit. SIGINT and SIGTERM are ignored: the analyzer's shutdown (its EOF) is
what ends this process, so a Ctrl-C or a service stop reaching the whole
process group does not throw rows away."""

from __future__ import annotations

import gc
import json
import os
import resource
import signal
import sys
import threading
import time
from collections import deque
from itertools import chain, repeat
from typing import Callable

from .frames import decode, read_frame

# Rows held here at most (more wait in the pipe, then in the analyzer's
# bounded queue, where an overflow is counted): rows are only ever dropped
# on the analyzer's side, so the rows done here stay a prefix of those sent.
MAX_HELD = 50_000
GC_THRESHOLD = 100_000  # allocations between young collections (Python's default: 700)
MAX_FRAMES_HELD = 25  # frames read but not yet rows (of up to 2,000 verdicts each)
HOLD_S = 0.2          # a frame waits at most this long for more before the writer takes them
WAKE_BYTES = 4 << 20  # or until the frames held make this much (about 9,000 verdicts)
STATUS_EVERY_S = 0.25


def _die(args) -> None:
    """The writing thread failed outside what it handles (a frame it cannot
    decode): end the process, whose exit the analyzer sees, rather than go
    on reading with nobody writing. Its frames are re-sent to the next."""
    sys.__excepthook__(args.exc_type, args.exc_value, args.exc_traceback)
    os._exit(70)


def _row_or_note(entry: object, now: float) -> tuple:
    """A verdict row_of cannot convert (not a dict, a cycle, ...) becomes a
    row saying so, in its place: rows stay one per verdict and in order,
    which is how the analyzer counts what is done; the writer goes on."""
    from .rows import row_of, unconvertible
    try:
        return row_of(entry, now)
    except Exception as e:
        return unconvertible(e, now)


def rows_of(frames: list[bytes]) -> list[tuple]:
    """The rows of frames taken (ready rows, then a row per verdict)."""
    from .rows import row_of
    rows: list[tuple] = []
    for frame in frames:
        now, ready, chunks = decode(frame)
        rows += ready
        entries = list(chain.from_iterable(chunks))
        # A JSON frame's verdicts are objects nothing else holds (marshal may
        # share one between two): row_of takes them apart (owned), so none
        # is converted twice: `+= map` keeps the rows made before a failure,
        # and the entry that failed (still whole) gets a note.
        owned, i = frame[:1] == b"j", 0
        while i < len(entries):
            done = len(rows)
            try:
                rows += map(row_of, entries[i:], repeat(now), repeat(owned))
                break
            except Exception:
                i += len(rows) - done
                rows.append(_row_or_note(entries[i], now))
                i += 1
    return rows


class _Pace:
    """When the writer takes the frames read, and when the analyzer is told
    how it went (module docstring): a thread of its own keeps the times."""

    def __init__(self, wake: Callable[[], None], status: Callable[[], dict],
                 send: Callable[[dict], None]):
        self.wake, self.status, self.send = wake, status, send
        self.cond = threading.Condition()  # also the back-pressure's: frames taken, room made
        self.frames: deque = deque()
        self.bytes = 0
        self.first: float | None = None  # when the oldest frame not yet taken came
        self.given = False               # the writer woken for them
        self.owed = False                # a write not yet reported
        self.last = 0.0                  # when the last status went
        self.health: tuple = (True, None)
        self.closed = False
        self.reporting = threading.Lock()  # reports in the order of their counts

    def add(self, frame: bytes) -> None:
        with self.cond:
            self.frames.append(frame)
            self.bytes += len(frame)
            if self.first is None:
                self.first = time.monotonic()
            self.cond.notify_all()

    def take(self) -> list[bytes]:
        """The frames read (the writer's thread, in its flush)."""
        with self.cond:
            out, self.frames, self.bytes, self.first = list(self.frames), deque(), 0, None
            self.given = False
            self.cond.notify_all()
        return out

    def written(self, final: bool = False) -> None:
        """After a write attempt (the writer's thread): report now if the
        store's health changed, it is the last, or the last report is old."""
        with self.reporting:
            st = self.status()
            health = (st["ok"], st["error"])
            with self.cond:
                self.cond.notify_all()  # rows written: room for more
                now = time.monotonic()
                if not (final or health != self.health or now >= self.last + STATUS_EVERY_S):
                    self.owed = True
                    return
                self.owed, self.last, self.health = False, now, health
            self.send({"status": st})

    def run(self) -> None:
        while True:
            with self.cond:
                while True:
                    now = time.monotonic()
                    due = [self.last + STATUS_EVERY_S] if self.owed else []
                    if self.first is not None and not self.given:
                        due.append(now if self.bytes >= WAKE_BYTES else self.first + HOLD_S)
                    if self.closed or (due and min(due) <= now):
                        break
                    self.cond.wait(min(due) - now if due else None)
                if self.closed:
                    return
                wake = self.first is not None and not self.given and (
                    self.bytes >= WAKE_BYTES or now >= self.first + HOLD_S)
                self.given = self.given or wake  # not again until the writer takes them
                report = self.owed and now >= self.last + STATUS_EVERY_S
            if wake:
                self.wake()
            if report:
                self.written()


def main() -> int:
    from .base import Retention
    from .writer import StoreWriter
    from . import is_postgres
    from .sqlite import one_writer_process

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    threading.excepthook = _die
    # Decoding and converting make a dozen containers a row, none in a
    # cycle: at the default threshold (700) the collector ran every 50 rows
    # and took up to half of the decoding (marshal: 1.1 us a verdict
    # against 1.6 to 3). Still on, for a cycle an error path may leave.
    gc.set_threshold(GC_THRESHOLD, 20, 20)
    stdin = sys.stdin.buffer
    first = read_frame(stdin)
    if first is None:
        return 0
    cfg = decode(first)
    out = os.fdopen(os.dup(1), "w", buffering=1)
    out_lock = threading.Lock()

    def send(obj: dict) -> None:
        line = json.dumps(obj, separators=(",", ":"), default=str) + "\n"
        with out_lock:
            try:
                out.write(line)
                out.flush()
            except OSError:  # the analyzer is gone (killed): write what is held all the same
                pass

    def status() -> dict:
        usage = resource.getrusage(resource.RUSAGE_SELF)  # what the store costs, for status
        return {**writer.status(), "cpu_s": round(usage.ru_utime + usage.ru_stime, 2)}

    # Frames are read here and turned into rows on the writer's thread, just
    # before it writes them: the GIL is then wanted by one busy thread at a
    # time. Converting here while the writer inserts made each of its rows
    # wait for the GIL (executemany takes it back after every row's step).
    writer = StoreWriter(cfg["dsn"], lambda msg: send({"warn": msg}),
                         Retention(cfg["max_age_days"], cfg["max_bytes"]), max_buffered=None,
                         on_flush=lambda: pace.written(), intake=lambda: rows_of(pace.take()))
    pace = _Pace(lambda: writer.submit([]), status, send)
    threading.Thread(target=pace.run, name="pace", daemon=True).start()
    if not is_postgres(cfg["dsn"]):
        # The writer's connection, opened by its thread, is the only one in
        # this process and used by that thread alone: SQLite without its
        # locks and memory statistics (a no-op where a connection is open).
        one_writer_process()
    writer.start()
    while True:
        with pace.cond:  # back-pressure: the pipe fills while the store is behind
            pace.cond.wait_for(lambda: len(pace.frames) < MAX_FRAMES_HELD
                               and writer.buffered() < MAX_HELD)
        frame = read_frame(stdin)
        if frame is None:
            break
        pace.add(frame)
    with pace.cond:
        pace.closed = True
        pace.cond.notify_all()
    writer.close()
    pace.written(final=True)
    return 0


def run() -> None:
    try:
        sys.exit(main())
    except BrokenPipeError:  # the analyzer is gone: nobody left to report to
        sys.exit(1)
