"""The analyzer's side of the event store: the writer runs in a process of
its own (child.py), so converting verdicts to rows, inserting them and
counting the summary use another core instead of the analyzer's GIL.

The analyzer hands over its verdict entries as it records them (submit,
from the thread that judged them: no records thread in between, whose
delays once overflowed a buffer of its own) and they are queued
(outbox.py), packed as JSON where they were made (frames.pack); a thread
here joins them into frames (frames.frame_of) and writes them to the
writer's stdin, and a second thread reads what the writer reports. A frame
is kept, encoded, until the writer reports its rows done (written, or
refused for their content), so a writer that dies loses nothing: a new one
is started RESTART_EVERY_S later and sent every frame not yet done (a row
written in the instant between its commit and its report may be written
twice). A full pipe blocks only the sending thread; the analyzer's queue is
bounded (MAX_QUEUED rows) and its overflow, the oldest first, counted in
rows_dropped. Nothing here raises into the analyzer: status() says what is
wrong, stderr gets one line per new problem."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections import deque
from pathlib import Path
from typing import Callable

from . import describe
from .base import Retention
from .frames import HEADER, decode, encode, frame_of, pack, widen
from .outbox import Outbox

MAX_QUEUED = 200_000     # rows not yet done, here and in the writer
RESTART_EVERY_S = 5.0
POISON_DEATHS = 3        # writers dying in a row before writing anything: the first frame is dropped
_ROOT = Path(__file__).resolve().parents[2]  # the checkout or site-packages holding netsentinel
_COUNTERS = ("rows_written", "rows_dropped", "rows_expired")


class StoreProcess:
    def __init__(self, dsn: str, warn: Callable[[str], None], retention: Retention | None = None):
        self.dsn = dsn
        self.warn = warn
        self.retention = retention or Retention()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = False
        self._out = Outbox()          # not sent yet
        self._sent: deque = deque()   # [encoded frame, its rows] sent to the current writer, not all done
        self._sent_rows = 0           # rows of _sent not done yet
        self._head_done = 0           # rows of _sent[0] done already
        self._done_seen = 0           # rows the current writer reported done
        self._child: dict = {}        # the current writer's last status
        self._past = dict.fromkeys((*_COUNTERS, "cpu_s"), 0)  # counters of writers that exited
        self._past_aside: list[str] = []
        self.rows_dropped = 0         # dropped here: the queue over MAX_QUEUED
        self.restarts = 0
        self._barren_deaths = 0        # writers in a row that died with nothing done
        self.error: str | None = None  # the writer process's own trouble
        self.proc: subprocess.Popen | None = None
        self._reader: threading.Thread | None = None
        self._thread: threading.Thread | None = None
        self._next_start = 0.0

    # -------------------------------------------------- the analyzer's side
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="event-store", daemon=True)
        self._thread.start()

    @staticmethod
    def pack(entries: list) -> tuple:
        """A batch of verdict entries encoded for submit_packed (frames.pack):
        made where they were made, outside any lock."""
        return pack(entries), len(entries)

    def submit(self, rows: list[tuple], entries=(), now: float | None = None) -> None:
        """Queue ready rows and verdict entries (analysed at `now`); never
        blocks and never raises."""
        entries = entries if isinstance(entries, list) else list(entries)
        self._queue(rows, self.pack(entries) if entries else None, now)

    def submit_packed(self, packed: tuple, now: float | None = None) -> None:
        """submit() for entries pack() encoded already."""
        self._queue([], packed if packed[1] else None, now)

    def _queue(self, rows: list[tuple], chunk: tuple | None, now: float | None) -> None:
        with self._lock:
            first, full = self._out.add(rows, chunk, now)
            dropped = self._out.bound(MAX_QUEUED - self._sent_rows)
            self.rows_dropped += dropped
        if dropped:
            self._report(f"event store writer behind by more than {MAX_QUEUED} rows: dropping "
                         "the oldest (rows_dropped in analyzer_status.json)")
        if full or first:
            self._wake.set()

    def status(self) -> dict:
        with self._lock:
            st, proc = self._child, self.proc
            return {"dsn": describe(self.dsn), "ok": self.error is None and st.get("ok", True),
                    "error": self.error or st.get("error"),
                    **{k: self._past[k] + st.get(k, 0) for k in _COUNTERS},
                    "rows_dropped": self._past["rows_dropped"] + st.get("rows_dropped", 0)
                    + self.rows_dropped,
                    "rows_buffered": self._out.rows + self._sent_rows,
                    "set_aside": self._past_aside + list(st.get("set_aside", [])),
                    "writer_pid": proc.pid if proc else None, "writer_restarts": self.restarts,
                    "writer_cpu_s": round(self._past["cpu_s"] + st.get("cpu_s", 0), 2)}

    def close(self, wait_s: float = 30.0) -> None:
        """Send what is queued, let the writer write it and exit (at most
        wait_s: a store that does not answer must not hold the analyzer's
        exit; a writer still busy then finishes on its own)."""
        with self._lock:
            self._stopping = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(wait_s)
        left = self.status()["rows_buffered"]
        if left:
            self.warn(f"event store {describe(self.dsn)}: {left} rows not written at exit "
                      f"({self.error or self._child.get('error') or 'the writer is still busy'})")

    # ------------------------------------------------------ sending thread
    def _run(self) -> None:
        try:
            self._loop()
        except Exception as e:  # a bug here must show in the status, not stop storing unseen
            self._report(f"event store: the thread feeding the writer failed ({type(e).__name__}: "
                         f"{' '.join(str(e).split())[:200]}); no more rows are stored in this run")

    def _loop(self) -> None:
        tried_at_stop = False
        while True:
            with self._lock:
                proc, stopping = self.proc, self._stopping
                wait = self._out.due(stopping)
                idle = not self._out.frames and not self._sent
                frame = self._out.pop() if proc is not None else None
            if proc is None:
                if stopping and (idle or tried_at_stop):
                    return
                if stopping:  # one more writer for what is left, at once
                    tried_at_stop, self._next_start = True, 0.0
                if not self._start():
                    self._wake.wait(max(self._next_start - time.monotonic(), 0.0))
                    self._wake.clear()
                continue
            if frame is None:
                if stopping:
                    self._end(proc)
                    continue
                self._wake.wait(wait)
                self._wake.clear()
                continue
            self._send(proc, frame)

    def _send(self, proc: subprocess.Popen, frame: tuple) -> None:
        try:
            payload = frame_of(*frame[:3])
        except Exception as e:  # neither marshal nor pickle takes an entry: that frame only, counted
            with self._lock:
                self.rows_dropped += frame[3]
            self._report(f"event store: a batch could not be encoded ({type(e).__name__}: "
                         f"{' '.join(str(e).split())[:200]}); dropped, counted in rows_dropped")
            return
        # Only the encoding is kept until the writer reports the rows done:
        # the entries are let go here, not by the reading thread later.
        with self._lock:
            self._sent.append([payload, frame[3]])
            self._sent_rows += frame[3]
        self._write(proc, payload)

    def _write(self, proc: subprocess.Popen, payload: bytes) -> None:
        try:
            proc.stdin.write(payload)
            proc.stdin.flush()
        except (OSError, ValueError):
            # The writer is gone: its reader sees the exit, and this frame,
            # kept in _sent, goes to the next writer.
            self._end(proc)

    def _end(self, proc: subprocess.Popen) -> None:
        """EOF to the writer, then wait until its reader has taken its last
        report and seen it exit (it writes what it holds first)."""
        try:
            proc.stdin.close()
        except OSError:
            pass
        if self._reader is not None:
            self._reader.join()

    def _start(self) -> bool:
        now = time.monotonic()
        if now < self._next_start:
            return False
        self._next_start = now + RESTART_EVERY_S
        boot = f"import sys; sys.path.insert(0, {str(_ROOT)!r}); " \
               "from netsentinel.eventstore.child import run; run()"
        try:
            # A session of its own: where the kernel groups CPU time by
            # session (autogroup), a busy writer gets a share of its own
            # instead of taking the analyzer's.
            # -I: no current directory on sys.path (python -c would put it
            # first: a root process importing from wherever it was started)
            # and no PYTHON* variables; the package comes from _ROOT.
            proc = subprocess.Popen([sys.executable, "-I", "-c", boot], stdin=subprocess.PIPE,
                                    stdout=subprocess.PIPE, close_fds=True, start_new_session=True)
        except OSError as e:
            self._report(f"cannot start the event store's writer process ({e}); retried every "
                         f"{RESTART_EVERY_S:g}s, rows kept in memory")
            return False
        widen(proc.stdin)
        with self._lock:
            self.proc, self._done_seen, self._child = proc, 0, {}
            if self._sent and self._head_done:  # the rows of the first frame already done
                now_, rows, chunks = decode(self._sent[0][0][HEADER.size:])
                entries = [e for c in chunks for e in c]
                k = self._head_done
                rows, entries = rows[k:], entries[max(k - len(rows), 0):]
                self._sent[0] = [encode((now_, rows, [entries])), len(rows) + len(entries)]
                self._head_done = 0
            resend = [payload for payload, _ in self._sent]
        self._reader = threading.Thread(target=self._read, args=(proc,), name="event-store-reader",
                                        daemon=True)
        self._reader.start()
        # The settings travel on the pipe, not the command line: a DSN may hold a password.
        self._write(proc, encode({"dsn": self.dsn, "max_age_days": self.retention.max_age_days,
                                  "max_bytes": self.retention.max_bytes}))
        for payload in resend:
            self._write(proc, payload)
        return True

    # ------------------------------------------------------ reading thread
    def _read(self, proc: subprocess.Popen) -> None:
        for line in proc.stdout:
            try:
                msg = json.loads(line)
            except ValueError:
                continue
            if isinstance(msg.get("warn"), str):
                self.warn(msg["warn"])
            if isinstance(msg.get("status"), dict):
                self._done(msg["status"])
        code = proc.wait()
        self._exited(proc, code)

    def _done(self, st: dict) -> None:
        """Forget the frames whose rows the writer reports done."""
        with self._lock:
            done = int(st.get("rows_written", 0)) + int(st.get("rows_dropped", 0))
            k, self._child = done - self._done_seen, st
            self._done_seen = max(done, self._done_seen)  # a count never goes back
            while k > 0 and self._sent:
                left = self._sent[0][1] - self._head_done
                if k < left:
                    self._head_done += k
                    self._sent_rows -= k
                    break
                self._sent.popleft()
                self._head_done = 0
                self._sent_rows -= left
                k -= left
            back = (self.proc.pid if self.error is not None and self.proc is not None
                    and st.get("ok") else None)
        if back:
            self.warn(f"event store writer process {back} writes again")
            self.error = None

    def _exited(self, proc: subprocess.Popen, code: int) -> None:
        with self._lock:
            for k in self._past:
                self._past[k] += self._child.get(k, 0)
            self._past_aside += list(self._child.get("set_aside", []))
            self._child, self.proc = {}, None
            clean = self._stopping and code == 0
            poison = None
            if not clean:
                self.restarts += 1
                self._barren_deaths = self._barren_deaths + 1 if self._done_seen == 0 else 1
                if self._barren_deaths >= POISON_DEATHS and self._sent:
                    # The same first frame killed every writer it was sent to
                    # (it would kill the next): kept aside as a count, not resent.
                    poison = self._sent.popleft()[1] - self._head_done
                    self._sent_rows -= poison
                    self._head_done, self._barren_deaths = 0, 0
                    self.rows_dropped += poison
            left = self._out.rows + self._sent_rows
        if poison:
            self._report(f"event store: a batch of {poison} rows killed {POISON_DEATHS} writer "
                         "processes in a row; dropped, counted in rows_dropped")
        elif not clean:
            self._report(f"event store writer process {proc.pid} exited with code {code}; a new "
                         f"one starts within {RESTART_EVERY_S:g}s and is sent the {left} rows not "
                         "yet written")
        self._wake.set()

    def _report(self, msg: str) -> None:
        if msg != self.error:  # one line per new problem
            self.warn(msg)
        self.error = msg
