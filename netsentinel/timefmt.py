"""The one time format of events and records: ISO-8601 UTC with
microseconds and a trailing Z. Time is not storage, so it lives here and
not in store.py."""

from __future__ import annotations

import re
import time
from datetime import datetime, timedelta, timezone


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


# The events' own form, "YYYY-MM-DDTHH:MM:SS.ffffffZ": the events of one
# second share all but the microseconds. The second's text (never matched
# by a longer-than-any-event sentinel at first) and its microseconds since
# the epoch, as one tuple swapped whole.
_second: tuple[str, int] = ("-" * 28, 0)
_SECOND_TEXT = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}")
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_ONE_US = timedelta(microseconds=1)


def parse_event_time(s: str | None) -> float | None:
    """parse_iso(s), to the bit, for an event's time: one of the events'
    own form whose second was read last costs a slice and an int() rather
    than a datetime and its timestamp(). datetime.timestamp() divides the
    whole microseconds since the epoch by 10**6 (one correctly rounded int
    division): so does this. Any other text, or a new second, is parse_iso's
    (its refusals stand), and a new second of the exact form is remembered."""
    sec = _second
    if (type(s) is str and len(s) == 27 and s[26] == "Z" and s[19] == "." and s.startswith(sec[0])
            and s.isascii() and (frac := s[20:26]).isdigit()):
        return (sec[1] + int(frac)) / 1_000_000
    value = parse_iso(s)
    if type(s) is str:
        _remember_second(s, value)
    return value


def _remember_second(s: str, value: float) -> None:
    """Remember s's second when s, which parse_iso read as value, is of the
    events' exact form (ASCII digits where digits go: int() and isdigit()
    take other digits too, fromisoformat does not)."""
    global _second
    if not (len(s) == 27 and s[26] == "Z" and s[19] == "." and s.isascii() and s[20:26].isdigit()
            and _SECOND_TEXT.fullmatch(s, 0, 19)):
        return
    base = (datetime.fromisoformat(s[:19]).replace(tzinfo=timezone.utc) - _EPOCH) // _ONE_US
    if (base + int(s[20:26])) / 1_000_000 == value:   # always: the check that it is parse_iso's arithmetic
        _second = (s[:19], base)


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
