"""What the analyzer writes into records/, batched so that no file is
rewritten per event:

  dashboard_logs.json   bounded window of recent verdicts, rewritten at most
                        about once a second
  analyzed_events.jsonl full history, append-only JSON lines, rotating
  pending_threats.json  HIGH/CRITICAL verdicts through threats.add_or_merge,
                        duplicates coalesced between flushes (count kept)
  the event store      every verdict, new threat and auto-ban as a row at the
                        event's own time (eventstore/, when given a writer)
  ban_commands.json     only for auto-ban (off by default) and for CRITICAL
                        inbound floods (auto_block_floods, on by default)

add() is called from the reader and worker threads and only touches
memory; flush() runs on the analyzer's flusher thread.
"""

from __future__ import annotations

import itertools
import threading
import time
import uuid
from collections import deque
from typing import Callable

from .. import logfmt, threats
from ..eventstore.rows import record_row, row_of
from ..eventstore.writer import StoreWriter
from ..bancheck import BanRefused
from ..levels import THREAT_LEVELS, rank
from ..errors import DecisionError
from ..netinfo import ProtectedCache
from ..records import DASHBOARD_LOGS, HISTORY, HISTORY_KEEP, HISTORY_MAX_BYTES
from ..store import RecordsStore, StoreError
from ..timefmt import utc_now_iso
from .rules import destination_key

_RUN_ID = uuid.uuid4().hex[:6]
_SEQ = itertools.count(1)
LOG_WRITE_EVERY = 1.0
EVENTS_BUFFER = 200_000  # verdicts waiting for the event store's writer


class RecordsSink:
    def __init__(self, store: RecordsStore, get_cfg: Callable[[], dict],
                 get_whitelist: Callable[[], object], warn: Callable[[str], None],
                 history: bool = True, events: StoreWriter | None = None):
        self.store = store
        self.events = events
        # Bounded: a store slower than the stream must not grow the analyzer
        # without end; what falls off is counted (events_dropped).
        self._events_buf: deque = deque(maxlen=EVENTS_BUFFER)
        self.events_dropped = 0
        self._event_rows: list = []  # threat and decision rows, flusher thread only
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
        self.threats_written = 0
        self.auto_bans = 0
        self.write_errors = 0

    # -------------------------------------------------------- from any thread
    def add(self, entry: dict, threat: dict | None) -> None:
        with self._lock:
            self._window.append(entry)
            self._dirty = True
            if self.history:
                self._history_buf.append(entry)
            if self.events is not None:
                if len(self._events_buf) == EVENTS_BUFFER:
                    self.events_dropped += 1
                self._events_buf.append(entry)
            if threat is not None:
                cur = self._threats.get(threat["dedupe_key"])
                if cur is None:
                    self._threats[threat["dedupe_key"]] = [threat, 1]
                else:
                    best = cur[0]
                    if rank(threat["level"]) > rank(best["level"]) or (
                            threat["level"] == best["level"]
                            and threat.get("confidence", 0) > best.get("confidence", 0)):
                        cur[0] = threat
                    else:
                        best["event"] = threat["event"]  # newest sighting, highest words
                    cur[1] += 1

    @staticmethod
    def make_entry(event: dict, verdict: dict, backend: str, cached: bool) -> dict:
        # A random prefix per run and a counter: unique without a syscall per event.
        entry = {"id": f"{_RUN_ID}{next(_SEQ):06x}", "ts": utc_now_iso(), **verdict,
                 "backend": backend, "event": event}
        if cached:
            entry["cached"] = True
        return entry

    # ------------------------------------------------------ flusher thread
    def flush(self, force: bool = False) -> None:
        with self._flush_lock:
            try:
                self._flush_threats()
                self._flush_history()
                self._flush_logs(force)
            except StoreError as e:
                self.write_errors += 1
                self.warn(f"records write failed: {e} (will retry)")
            self._flush_events()

    def _flush_events(self) -> None:
        if self.events is None:
            return
        with self._lock:
            buf, self._events_buf = self._events_buf, deque(maxlen=EVENTS_BUFFER)
        rows, self._event_rows = self._event_rows + [row_of(e) for e in buf], []
        self.events.submit(rows)  # never raises: a broken store is reported, not fatal

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
        self._last_log_write = now
        self.store.write(DASHBOARD_LOGS, {"updated_at": utc_now_iso(), "max_entries": maxlen,
                                          "entries": entries})

    def _flush_history(self) -> None:
        with self._lock:
            buf, self._history_buf = self._history_buf, []
        if buf:
            self.store.append_jsonl_many(HISTORY, buf, max_bytes=HISTORY_MAX_BYTES, keep=HISTORY_KEEP)

    def _flush_threats(self) -> None:
        with self._lock:
            batch, self._threats = self._threats, {}
        if not batch:
            return
        cfg = self.get_cfg()
        results = threats.add_or_merge_many(self.store, [(t, n) for t, n in batch.values()])
        self.threats_written += len(results)
        for stored, merged in results:
            if not merged and self.events is not None:
                self._event_rows.append(record_row("threat", stored))
            if not merged:  # one key=value line per new threat (docs/SERVICE.md)
                logfmt.log("threat", "analyzer", id=stored.get("id"), level=stored.get("level"),
                           category=stored.get("category"), target=stored.get("target"),
                           confidence=stored.get("confidence"), kind=stored.get("kind"),
                           source=stored.get("verdict_source"), reason=stored.get("reason"))
            if stored.get("status") != "pending" or stored.get("level") != "CRITICAL":
                continue
            if stored.get("kind") == "flood":
                if cfg["auto_block_floods"]:
                    self._auto_ban(stored, cfg, flood=True)
            elif (cfg["auto_ban_critical"]
                  and float(stored.get("confidence") or 0) >= cfg["auto_ban_min_confidence"]):
                self._auto_ban(stored, cfg)

    def _auto_ban(self, threat: dict, cfg: dict, flood: bool = False) -> None:
        wl = self.get_whitelist()
        protected = self._protected.get(wl.config["protect_ssh_ports"])
        if flood:
            ttl, by, source = cfg["flood_ban_ttl_seconds"], "auto-block", "auto-flood"
            note = "auto_block_floods: CRITICAL flood"
        else:
            ttl, by, source = cfg["auto_ban_ttl_seconds"], "auto-ban", "auto"
            note = (f"auto_ban_critical: confidence {threat.get('confidence')} >= "
                    f"{cfg['auto_ban_min_confidence']}")
        try:
            threats.approve(self.store, threat["id"], by=by, source=source, ttl_seconds=ttl,
                            whitelist=wl, protected=protected, note=note)
            self.auto_bans += 1
            if self.events is not None:
                self._event_rows.append(record_row("decision", threat, reason=f"{by}: {note}",
                                                   category=f"{by} {ttl}s"))
            self.warn(f"{by}: {threat.get('target')} for {ttl}s "
                      f"(threat {threat['id']}, {threat.get('category')})")
            logfmt.log(by, "analyzer", ip=threat.get("target"), ttl_s=ttl, source=source,
                       threat=threat["id"], category=threat.get("category"))
        except BanRefused as e:
            if threat["id"] not in self._refused_autoban:
                self._refused_autoban.add(threat["id"])
                self.warn(f"auto-ban of {threat.get('target')} refused: {e}; threat {threat['id']} "
                          "stays pending for a person")
                logfmt.log(f"{by}_refused", "analyzer", ip=threat.get("target"),
                           threat=threat["id"], error=str(e))
        except DecisionError:
            pass  # decided by a person meanwhile

    def pending_threat_batch(self) -> int:
        with self._lock:
            return len(self._threats)


def threat_from(entry: dict, target: str | None, dedupe_key: str | None) -> dict | None:
    """The pending-threat record for a HIGH/CRITICAL verdict, else None."""
    if entry["level"] not in THREAT_LEVELS:
        return None
    event = entry["event"]
    return {"level": entry["level"], "category": entry["category"],
            "confidence": entry["confidence"], "reason": entry["reason"],
            "recommended_action": entry["recommended_action"],
            "verdict_source": entry["verdict_source"], "backend": entry["backend"],
            "rule_ids": entry.get("rule_ids", []), "event": event,
            "target": target or event.get("daddr"),
            "dedupe_key": dedupe_key or destination_key(event.get("daddr"))}
