"""Is the loader / analyzer / supervisor alive? From its status file
(written every few seconds: updated_at, running, pid) and whether that pid
still exists. Shared by the dashboard and the `netsentinel` command, so both
say the same thing about the same file."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any

from .timefmt import parse_iso

# Every writer refreshes its status every 2-5 s; three missed beats is "not responding".
STALE_AFTER = 15.0


def ts_of(value: Any) -> float | None:
    """Seconds since the epoch for an ISO time from a record, None when absent or bad."""
    if not isinstance(value, str):
        return None
    try:
        return parse_iso(value)
    except ValueError:
        return None


def duration(seconds: float) -> str:
    seconds = max(0.0, seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f} {unit}" if seconds < 10 * size else f"{seconds // size:.0f} {unit}"
    return f"{seconds:.0f} s"


def ago(value: Any, now: float | None = None) -> str:
    """'12 s ago' / '3 min ago' for an ISO time; '-' when unknown."""
    t = ts_of(value)
    if t is None:
        return "-"
    return f"{duration((now or time.time()) - t)} ago"


def expires(value: Any, now: float, past: str = "due") -> str:
    """'never' / 'in 3.0 h' for an ISO expiry; `past` once it has passed."""
    t = ts_of(value)
    if t is None:
        return "never"
    return past if t <= now else f"in {duration(t - now)}"


@dataclass(frozen=True)
class Liveness:
    state: str   # running | stale | stopped | absent
    text: str    # one line for people

    @property
    def running(self) -> bool:
        return self.state == "running"


def pid_alive(pid: object) -> bool | None:
    """True/False for a pid, None when the record names none."""
    if isinstance(pid, bool) or not isinstance(pid, int) or pid <= 0:
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # a root process seen from an unprivileged reader
        return True
    return True


def liveness(name: str, status: dict, now: float | None = None) -> Liveness:
    now = time.time() if now is None else now
    if not status:
        return Liveness("absent", f"{name}: not started (no status written yet)")
    when = status.get("updated_at")
    wrote = f"last wrote {ago(when, now)}"
    alive = pid_alive(status.get("pid"))
    if status.get("running") is False:
        return Liveness("stopped", f"{name}: stopped ({wrote})")
    if alive is False:
        return Liveness("stopped", f"{name}: not running, pid {status.get('pid')} is gone ({wrote})")
    t = ts_of(when)
    if t is None or now - t > STALE_AFTER:
        return Liveness("stale", f"{name}: not responding ({wrote})")
    return Liveness("running", f"{name}: running, pid {status.get('pid')} ({wrote})")
