"""What the analyzer writes into records/, batched so that no file is
rewritten per event:

  dashboard_logs.json   a small window of the latest verdicts (people, scripts),
                        rewritten at most every LOG_WRITE_EVERY seconds
  analyzed_events.jsonl full history, append-only JSON lines, rotating
  pending_threats.json  HIGH/CRITICAL verdicts through threats.add_or_merge,
                        duplicates coalesced between flushes (count kept)
  the event store      every verdict, new threat and auto-ban as a row at the
                        event's own time (eventstore/, when given a writer)
  ban_commands.json     only for auto-ban (off by default) and for CRITICAL
                        inbound floods (auto_block_floods, on by default)
  analyzer_rejected.jsonl  refused input lines (why, and their first bytes),
                        bounded, so hostile input is kept aside for a person

add() is called from the reader and worker threads and only touches
memory; flush() runs on the analyzer's flusher thread and never raises:
a failed write is retried at the next flush, a records file replaced by a
directory (or anything not a file) is set aside, and how long writing has
kept failing is in `recording` for the status and the exit decision.
"""

from __future__ import annotations

import itertools
import stat
import threading
import time
import uuid
from collections import deque
from typing import Callable

from .. import sightings, threats
from ..eventstore.process import StoreProcess
from .decisionlog import DecisionLog, newest_decision
from ..netinfo import ProtectedCache
from ..records import (ANALYZER_REJECTED, DASHBOARD_LOGS, HISTORY, HISTORY_KEEP, HISTORY_MAX_BYTES)
from ..store import RecordsStore, StoreError
from ..timefmt import IsoClock, utc_now_iso
from .threatflush import ThreatFlush
from .verdict import Verdict

REJECTED = ANALYZER_REJECTED
REJECTED_MAX_BYTES = 5 * 1024 * 1024
REJECTED_PER_FLUSH = 200     # kept aside per flush; more are counted only
# The sink rewrites pending_threats.json on every flush that has threats, so
# its signature changes four times a second on a busy host, and reading it
# back whole for decisions that often cost the reader a fifth of its time.
# A decision row carries its own decision time: a second's delay changes nothing in it.
DECISIONS_EVERY = 1.0
BATCH_MAX = 2000             # distinct threats waiting for one flush; more fold per actor
HISTORY_BUF_MAX = 20000      # history lines waiting for a write (normally one flush's worth)

_RUN_ID = uuid.uuid4().hex[:6]
_SEQ = itertools.count(1)
clock = IsoClock()   # a verdict's time: the date formatted once a second, not per verdict
# dashboard_logs.json is a small window for people and scripts (history is in
# the event store): rewritten at most every few seconds, never per event.
LOG_WRITE_EVERY = 3.0


class RecordsSink(ThreatFlush):
    def __init__(self, store: RecordsStore, get_cfg: Callable[[], dict],
                 get_whitelist: Callable[[], object], warn: Callable[[str], None],
                 history: bool = True, events: StoreProcess | None = None):
        self.store = store
        # Verdicts go to the store's writer as they are recorded (its queue
        # is bounded and counts its overflow), not through the flusher: a
        # flusher held up by a big records file once made them overflow here.
        self.events = events
        self._event_rows: list = []  # threat rows, flusher thread only
        # Decisions (people's and the auto-ban's) from pending_threats.json.
        self.decisions = (None if events is None else
                          DecisionLog(store, newest_decision(events.dsn, warn), warn))
        self.get_cfg = get_cfg
        self.get_whitelist = get_whitelist
        self.warn = warn
        self.history = history
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._window: deque = deque(maxlen=get_cfg()["log_max_entries"])
        self._dirty = False
        self._last_log_write = 0.0
        self._history_buf: list = []
        self._threats: dict = {}   # dedupe_key -> [threat, times]
        self._protected = ProtectedCache()
        self._refused_autoban: set = set()
        self.flood_gate: Callable[[dict], bool] | None = None   # set by the analyzer
        self._rejected: list = []
        self.rejected_dropped = 0
        self.history_dropped = 0
        self.threats_written = 0
        self.threats_folded = 0
        self.auto_bans = 0
        self.write_errors = 0
        self.failing_since: float | None = None   # monotonic time of the first failure in a row
        self.last_error: str | None = None
        self._threats_next = 0.0
        self._decisions_next = 0.0

    # -------------------------------------------------------- from any thread
    def add(self, entry: dict, threat: dict | None) -> None:
        self.add_many([entry], () if threat is None else (threat,))

    def add_many(self, entries: list, threats) -> None:
        """Verdict entries in order, and their pending threats (one lock:
        the reader records a block of lines at once)."""
        # Encoded here, outside the lock, while the entries are fresh in cache.
        packed = StoreProcess.pack(entries) if self.events is not None else None
        with self._lock:
            self._window.extend(entries)
            self._dirty = True
            if self.history:
                room = max(HISTORY_BUF_MAX - len(self._history_buf), 0)
                # Past the bound writing has been failing for a while: counted.
                self._history_buf += entries[:room]
                self.history_dropped += max(len(entries) - room, 0)
            if self.events is not None:  # under the lock: the store gets them in this order too
                self.events.submit_packed(packed)
            for threat in threats:
                self._add_threat(threat)

    def _add_threat(self, threat: dict) -> None:
        """One pending threat into the batch (the caller holds the lock)."""
        cur = self._threats.get(threat["dedupe_key"])
        if cur is None and len(self._threats) >= BATCH_MAX:
            # A flood of distinct targets between two flushes: one
            # entry per actor and category, not one per target.
            self.threats_folded += 1
            actor = sightings.actor_of(threat)
            threat = sightings.folded(threat, f"agg|{threat['category']}|{actor}",
                                      f"{actor}: many {threat['category']} threats at once; "
                                      "further targets are counted here")
            cur = self._threats.get(threat["dedupe_key"])
        if cur is None:
            self._threats[threat["dedupe_key"]] = [threat, 1]
        else:
            # One sighting's evidence shown whole, destinations and
            # sightings listed, the strongest rule evidence kept.
            sightings.merge_sighting(cur[0], threat)
            cur[1] += 1

    def reject(self, record: dict) -> None:
        """Keep a refused input line aside (any thread; memory only)."""
        with self._lock:
            if len(self._rejected) < REJECTED_PER_FLUSH:
                self._rejected.append(record)
            else:
                self.rejected_dropped += 1

    @staticmethod
    def make_entry(event: dict, verdict: dict | Verdict, backend: str, cached: bool,
                   ts: str | None = None) -> dict:
        """A verdict entry, timed `ts` (the reader's: when its block of lines
        was read) or now."""
        # A random prefix per run and a counter: unique without a syscall per event.
        if verdict.__class__ is Verdict:
            entry = verdict.entry(f"{_RUN_ID}{next(_SEQ):06x}", ts or clock(), backend, event)
        else:
            entry = {"id": f"{_RUN_ID}{next(_SEQ):06x}", "ts": ts or clock(), **verdict,
                     "backend": backend, "event": event}
        if cached:
            entry["cached"] = True
        return entry

    # ------------------------------------------------------ flusher thread
    def flush(self, force: bool = False) -> bool:
        """Write what is waiting; True when every write succeeded. Never
        raises: this runs on the flusher thread, which must outlive any
        hostile records file."""
        ok = True
        with self._flush_lock:
            for name, step in ((threats.PENDING_THREATS, lambda: self._flush_threats(force)),
                               (HISTORY, self._flush_history),
                               (DASHBOARD_LOGS, lambda: self._flush_logs(force)),
                               (REJECTED, self._flush_rejected)):
                try:
                    step()
                except Exception as e:  # noqa: BLE001 (any failure is reported, never fatal here)
                    ok = False
                    self._failed(name, e)
            self._flush_events(force)  # the event store reports its own trouble (status)
        if ok and self.failing_since is not None:
            self.warn("records are written again")
            self.failing_since = None
            self.last_error = None
        return ok

    def _failed(self, name: str, e: Exception) -> None:
        self.write_errors += 1
        msg = f"{name}: {type(e).__name__}: {' '.join(str(e).split())[:200]}"
        if self._not_a_file(name):
            # Something that is not a file where a records file belongs: move
            # it aside so the next flush writes a fresh file.
            try:
                aside = self.store.set_aside(name)
                msg += f"; set aside as {aside.name}"
            except Exception as e2:  # noqa: BLE001
                msg += f"; cannot set it aside ({type(e2).__name__}: {e2})"
        if self.failing_since is None:
            self.failing_since = time.monotonic()
        if msg != self.last_error:
            self.warn(f"records write failed: {msg} (will retry)")
        self.last_error = msg

    def _not_a_file(self, name: str) -> bool:
        try:
            st = self.store.stat(name)
        except (OSError, StoreError):
            return False
        return st is not None and not stat.S_ISREG(st.st_mode)

    def recording(self) -> dict:
        """How writing records/ goes, for analyzer_status.json."""
        since = self.failing_since
        return {"ok": since is None, "write_errors": self.write_errors,
                "history_lines_not_written": self.history_dropped,
                "failing_for_s": None if since is None else round(time.monotonic() - since, 1),
                "last_error": self.last_error}

    def _flush_rejected(self) -> None:
        with self._lock:
            buf, self._rejected = self._rejected, []
        if buf:
            try:
                self.store.append_jsonl_many(REJECTED, buf, max_bytes=REJECTED_MAX_BYTES, keep=1)
            except Exception:
                with self._lock:  # kept for the next try, within the same bound
                    self._rejected[:0] = buf[:REJECTED_PER_FLUSH - len(self._rejected)]
                raise

    def _flush_events(self, force: bool = False) -> None:
        if self.events is None:
            return
        rows, self._event_rows = self._event_rows, []
        now = time.monotonic()
        if self.decisions is not None and (force or now >= self._decisions_next):
            self._decisions_next = now + DECISIONS_EVERY
            rows += self.decisions.poll()
        if rows:  # never raises: a broken store is reported, not fatal
            self.events.submit(rows)

    def _flush_logs(self, force: bool) -> None:
        now = time.monotonic()
        maxlen = self.get_cfg()["log_max_entries"]
        with self._lock:
            if self._window.maxlen != maxlen:
                self._window = deque(self._window, maxlen=maxlen)
                self._dirty = True
            if not self._dirty or (not force and now - self._last_log_write < LOG_WRITE_EVERY):
                return
            entries = list(self._window)
            self._dirty = False
        try:
            # compact: the C encoder (a window of up to thousands of verdicts)
            self.store.write(DASHBOARD_LOGS, {"updated_at": utc_now_iso(), "max_entries": maxlen,
                                              "entries": entries}, compact=True)
        except Exception:
            with self._lock:
                self._dirty = True  # write the window again at the very next flush
            raise
        self._last_log_write = now

    def _flush_history(self) -> None:
        with self._lock:
            buf, self._history_buf = self._history_buf, []
        if buf:
            try:
                self.store.append_jsonl_many(HISTORY, buf, max_bytes=HISTORY_MAX_BYTES, keep=HISTORY_KEEP)
            except Exception:
                with self._lock:  # kept for the next try, within the same bound as the window
                    self._history_buf[:0] = buf[-self._window.maxlen:]
                raise

    def pending_threat_batch(self) -> int:
        with self._lock:
            return len(self._threats)
