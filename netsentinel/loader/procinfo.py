"""pid → ppid, session, exe, cmdline, read from /proc at event time.

The session id and the parent's and session leader's names let the
analyzer count a shell loop (a new process per probe) as one actor and
name who ran it (issue 12).

A connecting process may be gone before its event is read (a short-lived
curl, a scanner's child); then the fields are None and `proc_error` says why.
Results are cached briefly per (pid, start time) so a scanner making
thousands of connects costs three /proc reads, not thousands.

exe and cmdline are bytes chosen by whoever started the process, not
necessarily UTF-8: they are returned as str decoded with "surrogateescape"
(lossless), and the EventWriter turns them into valid JSON with the raw
bytes beside the text (events.byte_exact).
"""

from __future__ import annotations

import os
import time
from collections import OrderedDict

# argv can be megabytes; an event carries the first MAX_CMDLINE bytes and says
# how much was left out (the scan rules and a person need the start of it).
MAX_CMDLINE = 4096


EXITED = "process exited before it could be read"


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def stat_fields(pid: int) -> list[str]:
    """/proc/PID/stat's fields after the name (state ppid pgrp session ...
    starttime at [19]). comm may contain spaces and parentheses: the split is
    after the last ')'. Raises OSError (gone: FileNotFoundError) or
    ValueError."""
    stat = _read(f"/proc/{pid}/stat").decode("utf-8", "replace")
    return stat[stat.rindex(")") + 2:].split()


def read_process(pid: int) -> dict:
    info = {"ppid": None, "sid": None, "parent_comm": None, "session_leader": None,
            "exe": None, "cmdline": None, "proc_error": None}
    base = f"/proc/{pid}"
    try:
        after = stat_fields(pid)
        info["ppid"], info["sid"] = int(after[1]), int(after[3])
        info["cmdline"] = _cmdline(_read(f"{base}/cmdline"))
        info["parent_comm"] = read_comm(info["ppid"])
        info["session_leader"] = read_comm(info["sid"])
    except FileNotFoundError:
        info["proc_error"] = EXITED
        return info
    except (OSError, ValueError, IndexError) as e:
        info["proc_error"] = f"cannot read {base}: {e}"
        return info
    try:
        info["exe"] = os.readlink(f"{base}/exe")
    except FileNotFoundError:
        info["proc_error"] = EXITED
    except OSError as e:
        # Kernel threads have no exe; permission errors name themselves.
        info["proc_error"] = f"exe unavailable: {e.strerror}"
    return info


def read_comm(pid: int, errors: str = "backslashreplace") -> str | None:
    """A process's name (None: gone, or pid 0). Not UTF-8: each undecodable
    byte as \\xNN text, for people; errors="surrogateescape" for an event's
    own comm (lossless, like the kernel's: events.byte_exact)."""
    if pid <= 0:
        return None
    try:
        return _read(f"/proc/{pid}/comm").rstrip(b"\n").decode("utf-8", errors)
    except OSError:
        return None


def _cmdline(raw: bytes) -> str | None:
    raw = raw.rstrip(b"\0").replace(b"\0", b" ")
    if not raw:
        return None
    if len(raw) > MAX_CMDLINE:
        cut = len(raw) - MAX_CMDLINE
        shown = raw[:MAX_CMDLINE].decode("utf-8", "surrogateescape")
        return f"{shown} [{cut} more bytes not shown]"
    return raw.decode("utf-8", "surrogateescape")


class ProcCache:
    def __init__(self, ttl: float = 2.0, size: int = 4096):
        self.ttl = ttl
        self.size = size
        self._cache: OrderedDict[int, tuple[float, dict]] = OrderedDict()

    def get(self, pid: int) -> dict:
        now = time.monotonic()
        hit = self._cache.get(pid)
        # An exited pid is remembered too (EXITED): a scanner's short-lived
        # children would otherwise cost three failed /proc looks per event.
        if hit and now - hit[0] < self.ttl and hit[1]["proc_error"] in (None, EXITED):
            return dict(hit[1])
        info = read_process(pid)
        self._cache[pid] = (now, info)
        self._cache.move_to_end(pid)
        while len(self._cache) > self.size:
            self._cache.popitem(last=False)
        return dict(info)
