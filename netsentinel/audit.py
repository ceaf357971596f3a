"""The audit trail: who approved, rejected, banned, unbanned, trusted or
changed a setting, and when. One JSON object per line in records/audit.jsonl,
appended through the store's lock (rotated like every .jsonl the store keeps):

    {"ts": ISO-8601 UTC, "who": "dashboard session 3f2a9c01 (token, local, uid 0)",
     "action": "ban", "details": {"ip": "203.0.113.7", ...}, "outcome": "ok" | why refused}

Any tool may record here (the dashboard does for every write it makes)."""

from __future__ import annotations

import json
from typing import Any

from .store import RecordsStore, StoreError, utc_now_iso

AUDIT = "audit.jsonl"
# Details are a person's input: bounded so one entry stays one readable line.
MAX_DETAIL_CHARS = 2000


def _bounded(value: Any) -> Any:
    text = json.dumps(value, ensure_ascii=False, default=str)
    return value if len(text) <= MAX_DETAIL_CHARS else text[:MAX_DETAIL_CHARS] + "…"


def record(store: RecordsStore, who: str, action: str, details: dict | None = None,
           outcome: str = "ok") -> dict:
    entry = {"ts": utc_now_iso(), "who": who, "action": action,
             "details": {k: _bounded(v) for k, v in (details or {}).items()}, "outcome": outcome}
    store.append_jsonl_many(AUDIT, [entry])
    return entry


def read(store: RecordsStore, limit: int = 1000) -> tuple[list[dict], int]:
    """The newest `limit` entries (oldest first) and how many lines were not
    entries (a torn or hand-edited line is skipped, not fatal)."""
    try:
        text = store.read_text(AUDIT) or ""
    except StoreError:
        return [], 0
    entries, bad = [], 0
    for line in text.splitlines()[-limit:]:
        try:
            e = json.loads(line)
        except ValueError:
            bad += 1
            continue
        if isinstance(e, dict):
            entries.append(e)
        else:
            bad += 1
    return entries, bad
