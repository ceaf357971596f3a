"""The one time format of events and records: ISO-8601 UTC with
microseconds and a trailing Z. Time is not storage, so it lives here and
not in store.py."""

from __future__ import annotations

import time
from datetime import datetime, timezone


def utc_now_iso(ts: float | None = None) -> str:
    """ISO-8601 UTC with microseconds and a trailing Z (the event/record time format)."""
    dt = datetime.fromtimestamp(time.time() if ts is None else ts, tz=timezone.utc)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class IsoClock:
    """utc_now_iso() for a hot path (an event per connection): the date and
    time of day are formatted once a second, only the microseconds per call.
    Safe to share between threads (the cache is one tuple, swapped whole)."""

    def __init__(self):
        self._cache: tuple[int, str] = (-1, "")

    def __call__(self) -> str:
        t = time.time()
        sec = int(t)
        cached, prefix = self._cache
        if sec != cached:
            prefix = datetime.fromtimestamp(sec, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
            self._cache = (sec, prefix)
        return f"{prefix}.{int((t - sec) * 1e6):06d}Z"


def parse_iso(s: str | None) -> float | None:
    """Inverse of utc_now_iso (also accepts +00:00 offsets); None for None/empty."""
    if not s:
        return None
    if s[-1:] == "Z":
        # The events' own form (every event and record has one): Python 3.11
        # reads the Z itself, in half the time of the rewrite below. Older
        # Pythons refuse it, and a form it refuses goes the general way.
        try:
            return datetime.fromisoformat(s).timestamp()
        except ValueError:
            pass
    s = s.strip()
    if s.endswith("Z"):
        s = s[:-1] + "+00:00"
    dt = datetime.fromisoformat(s)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.timestamp()


MAX_TTL_S = 10 * 365 * 86400  # longer is a typo for "never" (or an overflow), not a TTL


def check_ttl(value: object) -> float:
    """A ttl_seconds value: a positive number of seconds up to MAX_TTL_S;
    ValueError with a one-line reason otherwise (bans and rules alike)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= MAX_TTL_S:
        raise ValueError(f"ttl_seconds must be a positive number of seconds up to {MAX_TTL_S}, "
                         f"got {value!r}")
    return value


def expiry_of(record: dict) -> float | None:
    """A record's "expires_at" as Unix time; None when absent or unreadable
    (a hand-edited file: such a record simply does not expire)."""
    try:
        return parse_iso(record.get("expires_at"))
    except (TypeError, ValueError, AttributeError):
        return None


def is_expired(record: dict, now: float) -> bool:
    """Has a ban or rule record's expires_at passed? (no readable expiry: never)"""
    exp = expiry_of(record)
    return exp is not None and exp <= now
