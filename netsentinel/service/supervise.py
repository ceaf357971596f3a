"""The pipeline supervisor: `unified_ebpf.py | llm_analyzer.py`, kept up.

It starts the loader with its stdout on a pipe to us, and the analyzer with
its stdin on a pipe from us, and forwards the loader's event lines between
them. When the analyzer exits (a crash, an OOM kill, SIGKILL by a person) the
loader does not notice: it keeps enforcing every ban, and its lines wait in a
bounded buffer here until the analyzer is back (restarted with backoff,
0.5 s doubling to 30 s, reset after a minute of good running). The restarted
analyzer is first given the loader's startup line again and a `warning`
event saying it was restarted, then what was buffered. Lines in the pipe of
the analyzer that died are lost with it (at most one pipe's worth, 64 KiB).

When the loader exits (or the supervisor is told to stop: SIGTERM, SIGINT,
SIGHUP are passed to the loader as SIGTERM, so it detaches its programs),
the remaining lines are forwarded, the analyzer's stdin is closed, it drains
and exits, and the supervisor exits with the loader's status: a loader that
failed makes the service fail (systemd's Restart=on-failure starts it again).
An analyzer that exits with status 2 (a usage error: a restart would fail
the same way) stops the pipeline with status 2.

Every start, exit and restart is a key=value line on stderr (netsentinel.logfmt)
and in records/supervisor_status.json (`netsentinel status` shows it). Under
systemd (Type=notify) READY=1 is sent once the loader's startup event came
through, STATUS= on every analyzer restart, STOPPING=1 on the way out.
"""

from __future__ import annotations

import collections
import json
import os
import signal
import subprocess
import threading
import time
from typing import Callable

from .. import logfmt
from ..cliargs import EXIT_USAGE
from ..events import make_event
from ..records import SUPERVISOR_STATUS
from ..store import RecordsStore, StoreError
from ..timefmt import utc_now_iso
from . import sdnotify

COMPONENT = "supervisor"
BACKOFF_S = (0.5, 1, 2, 4, 8, 16, 30)
STABLE_AFTER_S = 60.0       # an analyzer up this long resets the backoff
STATUS_EVERY_S = 2.0
BUFFER_LINES = 100_000      # loader lines kept while no analyzer reads (~30 MB at most)
WRITE_BATCH = 256           # lines per write to the analyzer
ANALYZER_DRAIN_S = 30.0     # at the end: the analyzer's own drain (10 s) and some slack
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with status {code}"


class Supervisor:
    def __init__(self, loader_cmd: list[str], analyzer_cmd: list[str], store: RecordsStore, *,
                 buffer_lines: int = BUFFER_LINES, backoff: tuple = BACKOFF_S,
                 log: Callable[..., None] = logfmt.log, notify: Callable[..., bool] = sdnotify.notify):
        self.loader_cmd, self.analyzer_cmd = loader_cmd, analyzer_cmd
        self.store = store
        self.buffer_lines = buffer_lines
        self.backoff = backoff
        self.log = lambda event, **kw: log(event, COMPONENT, **kw)
        self._notify = notify
        self.lines: collections.deque[bytes] = collections.deque()
        self.cond = threading.Condition()
        self.loader: subprocess.Popen | None = None
        self.analyzer: subprocess.Popen | None = None
        self.analyzer_started = 0.0
        self.restart_at: float | None = None
        self.failures = 0           # consecutive short-lived analyzer runs: the backoff step
        self.restarts = 0
        self.last_restart: dict | None = None
        self.startup_line: bytes | None = None
        self.loader_eof = False
        self.stopping: str | None = None
        self.ready = False
        self.forwarded = 0
        self.dropped = 0
        self._full = False
        self.started_at = utc_now_iso()
        self.exit_code: int | None = None

    # ------------------------------------------------------------ helpers
    def notify(self, *assignments: str) -> None:
        try:
            self._notify(*assignments)
        except OSError as e:
            self.log("notify_failed", error=str(e))

    def write_status(self, running: bool = True) -> None:
        a = self.analyzer
        status = {
            "pid": os.getpid(), "started_at": self.started_at, "updated_at": utc_now_iso(),
            "running": running, "ready": self.ready,
            "loader_pid": self.loader.pid if self.loader else None,
            "analyzer_pid": a.pid if a is not None and a.poll() is None else None,
            "analyzer_restarts": self.restarts, "last_restart": self.last_restart,
            "buffered_lines": len(self.lines), "dropped_lines": self.dropped,
            "forwarded_lines": self.forwarded,
        }
        try:
            self.store.write(SUPERVISOR_STATUS, status)
        except StoreError as e:
            self.log("status_write_failed", error=str(e))

    # ------------------------------------------------------------ loader
    def _read_loader(self) -> None:
        """Loader stdout → the buffer. The first line is its startup event."""
        assert self.loader is not None and self.loader.stdout is not None
        for line in self.loader.stdout:
            with self.cond:
                if self.startup_line is None:
                    self.startup_line = line
                if len(self.lines) >= self.buffer_lines:
                    self.lines.popleft()
                    self.dropped += 1
                    if not self._full:
                        self._full = True
                        self.log("buffer_full", lines=self.buffer_lines,
                                 note="no analyzer is reading; oldest events are dropped")
                self.lines.append(line)
                self.cond.notify()
        with self.cond:
            self.loader_eof = True
            self.cond.notify()

    def stop(self, why: str) -> None:
        if self.stopping is None:
            self.stopping = why
            self.log("stopping", why=why)
            self.notify("STOPPING=1")
        if self.loader is not None and self.loader.poll() is None:
            self.loader.send_signal(signal.SIGTERM)

    # ------------------------------------------------------------ analyzer
    def _start_analyzer(self) -> None:
        restarted = self.restarts > 0
        self.analyzer = subprocess.Popen(self.analyzer_cmd, stdin=subprocess.PIPE, bufsize=0,
                                         start_new_session=True)
        self.analyzer_started = time.monotonic()
        self.restart_at = None
        self.log("analyzer_start", pid=self.analyzer.pid, restarts=self.restarts)
        preface = []
        if restarted:
            if self.startup_line is not None:
                preface.append(self.startup_line)  # what the loader runs with, for its status
            why = (self.last_restart or {}).get("why", "it exited")
            preface.append((json.dumps(make_event(
                "warning", message=f"analyzer restarted by the supervisor ({why}); "
                                   f"restart {self.restarts}, {len(self.lines)} buffered lines follow, "
                                   "bans stayed enforced"), separators=(",", ":")) + "\n").encode())
            self.notify(f"STATUS=analyzer restarted {self.restarts} time(s); last: {why}")
        if preface:
            self._send(preface)

    def _analyzer_exited(self, code: int) -> None:
        assert self.analyzer is not None
        ran = time.monotonic() - self.analyzer_started
        pid = self.analyzer.pid
        self.analyzer = None
        why = describe_exit(code)
        if self.loader_eof or self.stopping:
            self.log("analyzer_exit", pid=pid, code=code, why=why, restart="no (pipeline stopping)")
            return
        if code == EXIT_USAGE:
            self.log("analyzer_exit", pid=pid, code=code, why=why,
                     restart="no (a usage error: fix the analyzer's flags)")
            self.exit_code = EXIT_USAGE
            self.stop("analyzer usage error")
            return
        self.failures = 0 if ran >= STABLE_AFTER_S else self.failures + 1
        delay = self.backoff[min(max(self.failures - 1, 0), len(self.backoff) - 1)]
        self.restarts += 1
        self.last_restart = {"at": utc_now_iso(), "why": why, "code": code, "after_s": round(ran, 3),
                             "delay_s": delay}
        self.restart_at = time.monotonic() + delay
        self.log("analyzer_exit", pid=pid, code=code, why=why, ran_s=round(ran, 3),
                 restart_in_s=delay, restarts=self.restarts, buffered=len(self.lines))
        self.write_status()

    def _send(self, batch: list[bytes]) -> bool:
        """Write lines to the analyzer; False (lines put back) when it is gone."""
        a = self.analyzer
        assert a is not None and a.stdin is not None
        try:
            _write_all(a.stdin.fileno(), b"".join(batch))
        except (BrokenPipeError, ValueError):
            with self.cond:
                self.lines.extendleft(reversed(batch))
            return False
        return True

    def _forward(self) -> None:
        with self.cond:
            batch = [self.lines.popleft() for _ in range(min(WRITE_BATCH, len(self.lines)))]
            if batch:
                self._full = False
        if batch and self._send(batch):
            self.forwarded += len(batch)

    # ------------------------------------------------------------ run
    def run(self) -> int:
        for s in STOP_SIGNALS:
            signal.signal(s, lambda signum, frame: self.stop(signal.Signals(signum).name))
        self.log("start", pid=os.getpid(), records=str(self.store.root))
        # Own sessions: a terminal's Ctrl-C reaches us only, and we stop the
        # loader first, so the analyzer sees every line up to "shutdown".
        self.loader = subprocess.Popen(self.loader_cmd, stdout=subprocess.PIPE, start_new_session=True)
        self.log("loader_start", pid=self.loader.pid)
        threading.Thread(target=self._read_loader, name="loader-reader", daemon=True).start()
        self._start_analyzer()
        next_status = 0.0
        while True:
            now = time.monotonic()
            if self.analyzer is None and self.restart_at is not None and now >= self.restart_at \
                    and not self.loader_eof and not self.stopping:
                self._start_analyzer()
            if self.analyzer is not None and (code := self.analyzer.poll()) is not None:
                self._analyzer_exited(code)
            if not self.ready and self.startup_line is not None and self.analyzer is not None:
                self.ready = True
                self.log("ready", loader_pid=self.loader.pid, analyzer_pid=self.analyzer.pid)
                self.notify("READY=1", "STATUS=loader enforcing, analyzer reading")
            if now >= next_status:
                self.write_status()
                next_status = now + STATUS_EVERY_S
            if self.analyzer is not None and self.lines:
                self._forward()
                continue
            with self.cond:
                if self.loader_eof and not self.lines:
                    break
                if self.analyzer is None and self.restart_at is None:
                    if self.loader_eof or self.stopping:
                        break   # no analyzer will come back: nothing more to forward to
                self.cond.wait(0.2)
        return self._finish()

    def _finish(self) -> int:
        a = self.analyzer
        if a is not None:
            if a.stdin is not None:
                a.stdin.close()  # EOF: the analyzer drains its queue and exits
            try:
                code = a.wait(timeout=ANALYZER_DRAIN_S)
            except subprocess.TimeoutExpired:
                a.terminate()
                code = a.wait()
            self.log("analyzer_exit", pid=a.pid, code=code, why=describe_exit(code), restart="no")
        self.analyzer = None
        if self.loader is not None and self.loader.poll() is None:
            self.loader.send_signal(signal.SIGTERM)
        code = self.loader.wait() if self.loader is not None else 1
        self.log("loader_exit", pid=self.loader.pid if self.loader else None, code=code,
                 why=describe_exit(code))
        self.write_status(running=False)
        if self.exit_code is not None:
            return self.exit_code
        # A loader killed by a signal we did not send is a failure too (128+n, as a shell says).
        return code if code >= 0 else 128 - code
