"""The audit trail: who approved, rejected, banned, unbanned, trusted or
changed a setting, and when. One JSON object per line in records/audit.jsonl,
appended through the store's lock (rotated like every .jsonl the store keeps):

    {"ts": ISO-8601 UTC, "who": "dashboard session 3f2a9c01 (token, local, uid 0)",
     "action": "ban", "details": {"ip": "203.0.113.7", ...}, "outcome": "ok" | why refused}

Any tool may record here (the dashboard does for every write it makes)."""

from __future__ import annotations

import json
import os
from typing import Any

from .records import AUDIT
from .store import RecordsStore, StoreError
from .timefmt import utc_now_iso

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


def _tail(store: RecordsStore, max_bytes: int) -> str:
    """The last max_bytes of the trail (it may be 50 MB; a page refresh reads
    only the end), starting at a line boundary. Never follows a link."""
    try:
        fd = os.open(store.path(AUDIT), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return ""
    except OSError as e:
        raise StoreError(f"cannot read {store.path(AUDIT)}: {e.strerror}") from e
    with os.fdopen(fd, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        f.seek(max(0, size - max_bytes))
        data = f.read(max_bytes)
    if size > max_bytes:
        data = data.partition(b"\n")[2]  # the first line is cut
    return data.decode("utf-8", errors="replace")


def read(store: RecordsStore, limit: int = 1000, max_bytes: int = 4 * 1024 * 1024
         ) -> tuple[list[dict], int]:
    """The newest `limit` entries (oldest first) and how many lines were not
    entries (a torn or hand-edited line is skipped, not fatal)."""
    entries, bad = [], 0
    for line in _tail(store, max_bytes).splitlines()[-limit:]:
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
