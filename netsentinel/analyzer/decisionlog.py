"""Decisions on pending threats as event-store rows, whoever made them: a
person in the dashboard, `netsentinel threats approve|reject`, a hand edit
of pending_threats.json, or the analyzer's own auto-ban. The analyzer is the
store's one writer, so it notices them: when pending_threats.json changes,
every item decided after the last recorded decision becomes one `decision`
row at its own decision time (`decided_at`), naming who decided, the
outcome and the note. The file is only read (its owner, the threat sink,
sets a corrupt one aside)."""

from __future__ import annotations

from typing import Callable

from ..eventstore.rows import record_row
from ..records import PENDING_THREATS
from ..store import RecordsStore, StoreError
from ..timefmt import parse_iso
from ..watch import FileSignature

DECIDED = ("approved", "rejected")
SEEN_MAX = 4096  # ids decided at the watermark's exact time, remembered to avoid a second row


def _decided_at(item: dict) -> float | None:
    try:
        return parse_iso(item["decided_at"]) if isinstance(item.get("decided_at"), str) else None
    except ValueError:
        return None


class DecisionLog:
    def __init__(self, store: RecordsStore, since: float | None,
                 warn: Callable[[str], None] = lambda msg: None):
        """since: the newest decision time already in the store (None: an
        empty store, so every decision in the file is recorded once)."""
        self.store = store
        self.warn = warn
        self.watermark = since
        # Ids decided at exactly the watermark's time and recorded; None: all
        # of them (the stored watermark after a restart).
        self._at_watermark: set[str] | None = None
        self._sig = FileSignature(store.path(PENDING_THREATS))
        self.recorded = 0

    def poll(self) -> list[tuple]:
        """Rows for the decisions made since the last poll (never raises)."""
        if not self._sig.changed():
            return []
        try:
            items = self.store.read(PENDING_THREATS, [], on_corrupt="default")
        except StoreError as e:
            self.warn(f"decisions not read: {e}")
            self._sig.forget()
            return []
        new = []
        for item in items if isinstance(items, list) else []:
            if not isinstance(item, dict) or item.get("status") not in DECIDED:
                continue
            at = _decided_at(item)
            if at is None or (self.watermark is not None and at < self.watermark):
                continue
            if at == self.watermark and (self._at_watermark is None
                                         or str(item.get("id")) in self._at_watermark):
                continue
            new.append((at, item))
        rows = []
        for at, item in sorted(new, key=lambda p: p[0]):
            by, note = item.get("decided_by") or "?", item.get("note")
            rows.append(record_row("decision", item, ts=item["decided_at"],
                                   category=f"{item['status']} {item.get('category') or ''}".strip(),
                                   reason=f"{by}: {item['status']}" + (f" ({note})" if note else "")))
            if self.watermark is None or at > self.watermark:
                self.watermark, self._at_watermark = at, set()
            if self._at_watermark is not None and len(self._at_watermark) < SEEN_MAX:
                self._at_watermark.add(str(item.get("id")))
        self.recorded += len(rows)
        return rows


def newest_decision(dsn: str, warn: Callable[[str], None]) -> float | None:
    """The time of the newest decision row already stored (the watermark a
    restarted analyzer starts from); None for a store without one. When the
    store cannot be read, now: decisions made while it was unreadable are
    then not recorded (said once), rather than every old one twice."""
    import time
    from ..eventstore import Query, open_store
    try:
        db = open_store(dsn, readonly=True)
    except Exception:  # noqa: BLE001 (absent: a new store, nothing recorded yet)
        return None
    try:
        rows = db.search(Query(kind="decision", limit=1)) if db.schema_version() else []
        return float(rows[0]["ts"]) if rows else None
    except Exception as e:  # noqa: BLE001
        warn(f"event store: cannot read the newest recorded decision ({e}); "
             "recording decisions made from now on")
        return time.time()
    finally:
        db.close()
