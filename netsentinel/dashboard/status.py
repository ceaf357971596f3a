"""Is the loader / analyzer alive? From its status file (written every few
seconds: updated_at, running, pid) and whether that pid still exists."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

from .data import ago, ts_of

# Both writers refresh their status every 2-5 s; three missed beats is "not responding".
STALE_AFTER = 15.0


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
    except PermissionError:  # a root process seen from an unprivileged dashboard
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
