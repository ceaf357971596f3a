"""The analyzer's writer thread, kept alive: it flushes records/ and the
status file on a timer, survives any exception (counted, one line), is
restarted by the reader if it ever dies anyway, and when writing records
has kept failing for RECORD_FAIL_EXIT_S it says so in analyzer_status.json
and stops the process (SIGTERM to itself, exit status 3) so that its
supervisor sees a failure instead of a process that judges and keeps
nothing."""

from __future__ import annotations

import os
import signal
import threading
import time
import traceback
from typing import Callable

RECORD_FAIL_EXIT_S = 10.0
EXIT_RECORDING_FAILED = 3


class Flusher:
    def __init__(self, flush: Callable[[], bool], write_status: Callable[[], None],
                 recording: Callable[[], dict], warn: Callable[[str], None], *,
                 every: float, status_interval: float):
        self.flush = flush
        self.write_status = write_status
        self.recording = recording
        self.warn = warn
        self.every = every
        self.status_interval = status_interval
        self.stop = threading.Event()
        self.restarts = 0
        self.crashes = 0
        self.fatal: str | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="records-flusher", daemon=True)
        self._thread.start()

    def ensure_alive(self) -> None:
        """Called by the reader now and then: a dead writer is restarted."""
        t = self._thread
        if t is not None and not t.is_alive() and not self.stop.is_set():
            self.restarts += 1
            self.warn(f"records writer thread had stopped; restarted ({self.restarts} so far)")
            self.start()

    def join(self, timeout: float) -> None:
        self.stop.set()
        if self._thread is not None and self._thread.is_alive():
            self._thread.join(timeout=timeout)

    def _loop(self) -> None:
        next_status = 0.0
        while not self.stop.wait(self.every):
            try:
                self.flush()
                failing = self.recording().get("failing_for_s")
                if failing is not None and failing >= RECORD_FAIL_EXIT_S and self.fatal is None:
                    self.fatal = (f"records could not be written for {failing:.0f}s "
                                  f"({self.recording().get('last_error')}); exiting with status "
                                  f"{EXIT_RECORDING_FAILED} so that a supervisor notices: "
                                  "fix the records directory and restart")
                    self.write_status()
                    self.warn(self.fatal)
                    os.kill(os.getpid(), signal.SIGTERM)
                    return
                if time.monotonic() >= next_status:
                    next_status = time.monotonic() + self.status_interval
                    self.write_status()
            except Exception as e:  # noqa: BLE001 (the writer outlives anything)
                self.crashes += 1
                where = traceback.extract_tb(e.__traceback__)[-1]
                self.warn(f"records writer: {type(e).__name__}: {' '.join(str(e).split())[:200]} "
                          f"at {os.path.basename(where.filename)}:{where.lineno}; going on")
