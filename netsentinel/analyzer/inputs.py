"""Reading the loader's stream: one JSON object per line, schema v1
(docs/events.md). A line that is not JSON or not a v1 event is refused with
a one-line reason; refusals are reported on stderr at a bounded rate."""

from __future__ import annotations

import json
import time
from typing import Callable

from ..errors import NetSentinelError
from ..events import EVENT_TYPES, SCHEMA_VERSION

# Checked by hand rather than with jsonschema: this runs for every event and
# must stay in the microseconds.
_CONN_TYPES = {
    "pid": int, "uid": int, "comm": str, "daddr": str, "dport": int, "family": str,
}
_CONN_NULLABLE = {"ppid": int, "exe": str, "cmdline": str, "saddr": str, "sport": int,
                  "proc_error": str}


class BadLine(NetSentinelError, ValueError):
    """An input line that is not an event; str() is the one-line reason."""


def parse_line(line: bytes | str) -> dict:
    """The event of one line, or BadLine with why."""
    try:
        ev = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BadLine(f"not JSON ({getattr(e, 'msg', e)})") from None
    if not isinstance(ev, dict):
        raise BadLine(f"not a JSON object but {type(ev).__name__}")
    if ev.get("v") != SCHEMA_VERSION:
        raise BadLine(f"not a v{SCHEMA_VERSION} event (v={ev.get('v')!r})")
    if ev.get("type") not in EVENT_TYPES:
        raise BadLine(f"unknown event type {ev.get('type')!r}")
    if not isinstance(ev.get("ts"), str):
        raise BadLine("missing ts")
    if ev["type"] == "connection":
        for k, t in _CONN_TYPES.items():
            v = ev.get(k)
            if not isinstance(v, t) or isinstance(v, bool):
                raise BadLine(f"connection event: {k} must be {t.__name__}, got {v!r}")
        for k, t in _CONN_NULLABLE.items():
            v = ev.get(k)
            if v is not None and (not isinstance(v, t) or isinstance(v, bool)):
                raise BadLine(f"connection event: {k} must be {t.__name__} or null, got {v!r}")
        if not 0 <= ev["dport"] <= 65535:
            raise BadLine(f"connection event: dport {ev['dport']} outside 0-65535")
        if ev["family"] not in ("ipv4", "ipv6"):
            raise BadLine(f"connection event: family {ev['family']!r}")
    return ev


class RateLimitedWarn:
    """At most one message per `every` seconds; the rest are counted and
    mentioned with the next message (or by flush())."""

    def __init__(self, warn: Callable[[str], None], every: float = 1.0):
        self.warn = warn
        self.every = every
        self._last = -1e9
        self.suppressed = 0

    def __call__(self, msg: str) -> None:
        now = time.monotonic()
        if now - self._last < self.every:
            self.suppressed += 1
            return
        self._last = now
        if self.suppressed:
            msg += f" ({self.suppressed} similar warnings suppressed)"
            self.suppressed = 0
        self.warn(msg)

    def flush(self, what: str) -> None:
        if self.suppressed:
            self.warn(f"{self.suppressed} more {what} suppressed")
            self.suppressed = 0
