"""Contain commands (issue 12): their shape, checked the same way for every
writer (`netsentinel contain`, the dashboard's Review, people, scripts) and
by the loader, which consumes records/contain_commands.json and its drop
directory (loader/contain.py).

    {"action": "contain", "pid": 4242, "exe": "/tmp/x/scanner", "by_exe": true,
     "ttl_seconds": 3600, "reason": "...", "source": "review", "threat_id": "...",
     "signal": "TERM"|"KILL"}
    {"action": "contain", "exe": "/usr/bin/nmap"}          every run of that file
    {"action": "release", "id": "pid:4242" | "exe:/usr/bin/nmap"}

A process is contained by pid (its children too, in the kernel at fork);
by_exe (default true when a pid is given) also contains its executable, so
running it again is contained. `exe` beside a pid is the executable the
writer saw: the loader refuses the command if the pid now runs another one
(the process ended and its pid was reused). `signal` stops the process
after containing it. Total: any JSON value gives a ContainCommand or
ContainRefused (one line), never another exception.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from .bancheck import MAX_NAME_CHARS, MAX_REASON_CHARS, BanRefused, _text_field, parse_ttl
from .errors import NetSentinelError

ACTIONS = ("contain", "release")
SIGNALS = ("TERM", "KILL")
PID_MAX = 4194304   # the kernel's PID_MAX_LIMIT on 64-bit
MAX_PATH_CHARS = 4096


class ContainRefused(NetSentinelError, ValueError):
    """A contain command that cannot be applied; the message says why."""


@dataclass(frozen=True)
class ContainCommand:
    action: str
    pid: int | None = None
    exe: str | None = None
    by_exe: bool = False
    ttl_seconds: int | None = None
    reason: str | None = None
    source: str = "manual"
    signal: str | None = None
    id: str | None = None   # release: the record's id

    def ids(self) -> list[str]:
        """The contained.json records this command makes or names."""
        if self.id:
            return [self.id]
        out = [pid_id(self.pid)] if self.pid else []
        if self.exe and (self.by_exe or not self.pid):
            out.append(exe_id(self.exe))
        return out


def pid_id(pid: int) -> str:
    return f"pid:{pid}"


def exe_id(path: str) -> str:
    return f"exe:{path}"


def _pid(raw: dict) -> int | None:
    pid = raw.get("pid")
    if pid is None:
        return None
    if pid == 1 and not isinstance(pid, bool):
        raise ContainRefused("pid 1 is init: containing it would contain every process it starts")
    if isinstance(pid, bool) or not isinstance(pid, int) or not 1 < pid <= PID_MAX:
        raise ContainRefused(f"pid must be a whole number from 2 to {PID_MAX}, got {str(pid)[:40]!r}")
    return pid


def _exe(raw: dict) -> str | None:
    exe = raw.get("exe")
    if exe is None:
        return None
    if not isinstance(exe, str) or not exe.startswith("/") or len(exe) > MAX_PATH_CHARS \
            or "\0" in exe:
        raise ContainRefused(f"exe must be an absolute path of at most {MAX_PATH_CHARS} characters")
    if exe.endswith(" (deleted)"):
        raise ContainRefused("exe names a deleted file; contain the process by pid (by_exe covers "
                             "its executable while it runs)")
    return os.path.normpath(exe)


def parse_command(raw: object) -> ContainCommand:
    if not isinstance(raw, dict):
        raise ContainRefused(f"a contain command must be a JSON object, got {type(raw).__name__}")
    action = raw.get("action")
    if action not in ACTIONS:
        shown = repr(action)[:60] if isinstance(action, str) or action is None else type(action).__name__
        raise ContainRefused(f"unknown action {shown} (expected 'contain' or 'release')")
    try:
        ttl = parse_ttl(raw.get("ttl_seconds"))
        reason = _text_field(raw, "reason", MAX_REASON_CHARS)
        source = _text_field(raw, "source", MAX_NAME_CHARS) or "manual"
        rid = _text_field(raw, "id", MAX_PATH_CHARS + 4)
        for name in ("threat_id", "requested_at"):
            _text_field(raw, name, MAX_NAME_CHARS)
    except BanRefused as e:
        raise ContainRefused(str(e)) from None
    pid, exe = _pid(raw), _exe(raw)
    by_exe = raw.get("by_exe", pid is not None)
    if not isinstance(by_exe, bool):
        raise ContainRefused("by_exe must be true or false")
    sig = raw.get("signal")
    if sig is not None and sig not in SIGNALS:
        raise ContainRefused(f"signal must be one of {', '.join(SIGNALS)} or absent")
    if action == "release":
        if rid is None and pid is None and exe is None:
            raise ContainRefused("release needs an 'id' (as `netsentinel contain list` shows), a pid "
                                 "or an exe")
        if rid is not None and not (rid.startswith("pid:") or rid.startswith("exe:/")):
            raise ContainRefused(f"id {rid[:60]!r} is not a containment id (pid:N or exe:/path)")
        return ContainCommand("release", pid, exe, pid is None, None, reason, source, None, rid)
    if pid is None and exe is None:
        raise ContainRefused("contain needs a pid, an exe (absolute path), or both")
    if sig is not None and pid is None:
        raise ContainRefused("signal needs a pid to send it to")
    return ContainCommand("contain", pid, exe, by_exe if pid is not None else True, ttl, reason,
                          source, sig)


def contain_command(*, pid: int | None = None, exe: str | None = None, by_exe: bool | None = None,
                    ttl_seconds: int | None = None, reason: str | None = None,
                    source: str = "manual", signal: str | None = None,
                    threat_id: str | None = None) -> dict:
    """A checked contain command, for writers (raises ContainRefused)."""
    raw = {"action": "contain", "source": source}
    for k, v in (("pid", pid), ("exe", exe), ("by_exe", by_exe), ("ttl_seconds", ttl_seconds),
                 ("reason", reason), ("signal", signal), ("threat_id", threat_id)):
        if v is not None:
            raw[k] = v
    parse_command(raw)
    return raw
