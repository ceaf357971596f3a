"""The event store's writer process (started by process.StoreProcess, one
per analyzer). It reads frames of verdicts from its stdin, converts them to
rows (rows.row_of) and writes them through a StoreWriter, so row conversion,
inserts and the summary's counting run on a core of their own instead of in
the analyzer's interpreter, where they took the GIL from its reader.

stdin:  frames, each a 4-byte little-endian length, a codec byte and the
        payload: first the settings ({dsn, max_age_days, max_bytes}: not on
        the command line, where every user could read a DSN's password),
        then batches of (analysed-at time, [ready rows], [[verdict
        entries], in batches as the analyzer recorded them]).
        A batch of verdicts alone is orjson (b"j"): the analyzer's
        verdicts are objects it still holds elsewhere (its dashboard
        window, threats), and marshal looks every such object up in a
        table of references. Measured in a running analyzer (100,000
        verdicts): marshal 3.8 us a verdict on its sending thread, orjson
        2.3; here decoding costs 4.7 against marshal's 3.4. The sum is
        about even: the work moves off the analyzer, whose reader is the
        pipeline's narrowest point, to this process's core. JSON has no
        NaN or infinity: such a float arrives as null (SQLite stores a NaN
        as NULL all the same). Whatever orjson refuses (a lone
        surrogate, an integer past 64 bits, a key that is not a string, a
        type JSON lacks), ready rows (tuples, kept tuples) and the settings
        are marshal (b"m"), or pickle (b"p") for a type marshal cannot
        take. The only writer of this pipe is the parent analyzer, running
        this same interpreter (an anonymous pipe no other process holds).
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

import fcntl
import gc
import json
import marshal
import os
import pickle
import resource
import signal
import struct
import sys
import threading
import time
from collections import deque
from itertools import chain, repeat
from typing import Callable

import orjson

HEADER = struct.Struct("<I")
PIPE_BYTES = 1 << 20  # Linux's pipe-max-size default (more needs root and a sysctl)
MAX_FRAME = 1 << 30  # a length above this is a broken pipe stream, not a frame
# Rows held here at most (more wait in the pipe, then in the analyzer's
# bounded queue, where an overflow is counted): rows are only ever dropped
# on the analyzer's side, so the rows done here stay a prefix of those sent.
MAX_HELD = 50_000
GC_THRESHOLD = 100_000  # allocations between young collections (Python's default: 700)
MAX_FRAMES_HELD = 25  # frames read but not yet rows (of up to 2,000 verdicts each)
HOLD_S = 0.2          # a frame waits at most this long for more before the writer takes them
WAKE_BYTES = 4 << 20  # or until the frames held make this much (about 9,000 verdicts)
STATUS_EVERY_S = 0.25


def encode(obj: object) -> bytes:
    """A frame: header, codec, payload (ValueError/TypeError: pickle cannot either)."""
    body = None
    if obj.__class__ is tuple and len(obj) == 3 and not obj[1]:  # verdicts, no ready rows
        try:
            body = b"j" + orjson.dumps(obj)
        except TypeError:  # orjson.JSONEncodeError is one
            pass
    if body is None:
        try:
            body = b"m" + marshal.dumps(obj)
        except ValueError:
            body = b"p" + pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    return HEADER.pack(len(body)) + body


def pack(entries: list) -> bytes | list:
    """A batch of verdict entries as the JSON array a frame will carry
    (encoded where they were just made, while they are in the CPU's cache:
    encoding them later on the sending thread cost twice as much), or the
    list itself when orjson refuses it (encode then picks another codec)."""
    try:
        return orjson.dumps(entries)
    except TypeError:  # orjson.JSONEncodeError is one
        return entries


def frame_of(now: float, rows: list, batches: list) -> bytes:
    """The frame of (now, rows, batches), batches as pack() left them: packed
    arrays joined as they are into one JSON frame, else all decoded and
    encoded together (a batch orjson refused, or ready rows)."""
    if not rows and all(b.__class__ is bytes for b in batches):
        body = b"j[" + orjson.dumps(now) + b",[],[" + b",".join(batches) + b"]]"
        return HEADER.pack(len(body)) + body
    return encode((now, rows, [orjson.loads(b) if b.__class__ is bytes else b for b in batches]))


def decode(body: bytes) -> object:
    codec = body[:1]
    if codec == b"j":
        return orjson.loads(memoryview(body)[1:])
    return marshal.loads(body[1:]) if codec == b"m" else pickle.loads(body[1:])


def widen(pipe) -> None:
    """Widen the pipe to this process (the analyzer's end) to PIPE_BYTES from
    64 KiB: a frame (about 0.8 MB) then crosses in one or two writes and
    reads instead of a dozen, each a wait for the GIL on both sides (the
    reading thread here waited up to the 5 ms switch interval for every
    64 KiB while the writing thread converted rows). Best effort: a
    smaller pipe only costs time."""
    try:
        fcntl.fcntl(pipe.fileno(), fcntl.F_SETPIPE_SZ, PIPE_BYTES)
    except (OSError, AttributeError):
        pass


def read_frame(stream) -> bytes | None:
    head = stream.read(HEADER.size)
    if len(head) < HEADER.size:
        return None
    (n,) = HEADER.unpack(head)
    if n > MAX_FRAME:
        raise ValueError(f"frame of {n} bytes: the stream from the analyzer is broken")
    body = stream.read(n)
    return body if len(body) == n else None


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
