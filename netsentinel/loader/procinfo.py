"""pid → ppid, session, exe, cmdline, read from /proc at event time.

The session id and the parent's and session leader's names let the
analyzer count a shell loop (a new process per probe) as one actor and
name who ran it (issue 12).

A connecting process may be gone before its event is read (a short-lived
curl, a scanner's child); then the fields are None and `proc_error` says why.
Results are remembered per (pid, start time, name): a scanner making
thousands of connects costs one reading, and a connection event, which
carries the process's start from the kernel, is given the reading of its
own process even when that process is gone by then.

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
    # os.open/os.read, not open(): no buffered file object (a third of the
    # cost of reading a small /proc file, which the loader does per event).
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        chunks = []
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def stat_fields(pid: int) -> list[str]:
    """/proc/PID/stat's fields after the name (state ppid pgrp session ...
    starttime at [19]). comm may contain spaces and parentheses: the split is
    after the last ')'. Raises OSError (gone: FileNotFoundError) or
    ValueError."""
    return _fields(_read(f"/proc/{pid}/stat"))


def _stat_int(pid: int, index: int) -> int | None:
    try:
        return int(stat_fields(pid)[index])
    except (OSError, ValueError, IndexError):
        return None


def read_ppid(pid: int) -> int | None:
    """pid's parent now (None: gone or unreadable)."""
    return _stat_int(pid, 1)


def read_start(pid: int) -> int | None:
    """The start time of the process holding pid now, in clock ticks since
    boot, as /proc shows it (None: gone or unreadable)."""
    return _stat_int(pid, 19)


def _fields(stat: bytes) -> list[str]:
    text = stat.decode("utf-8", "replace")
    return text[text.rindex(")") + 2:].split()


# /proc/PID/stat's starttime is the kernel's start_boottime in clock ticks
# (USER_HZ), rounded down (fs/proc/array.c, nsec_to_clock_t: a plain division
# where USER_HZ divides a second, as on every architecture Linux has), plus
# the reader's time namespace's boottime offset.
_TICK_NS = 1_000_000_000 // os.sysconf("SC_CLK_TCK")


def _boottime_offset_ns() -> int:
    try:
        with open("/proc/self/timens_offsets") as f:
            for line in f:
                clock, secs, nsecs = line.split()
                if clock == "boottime":
                    return int(secs) * 1_000_000_000 + int(nsecs)
    except (OSError, ValueError):
        pass   # before Linux 5.6: no time namespaces
    return 0


_BOOT_OFFSET_NS = _boottime_offset_ns()


def start_ticks(start_ns: int) -> int:
    """A kernel start_boottime (ns, as in a connection event) as /proc shows it."""
    return (start_ns + _BOOT_OFFSET_NS) // _TICK_NS


def _instance(stat: bytes) -> tuple[bytes, int]:
    """Which process a /proc/PID/stat is of: its name, and its start time in
    clock ticks since boot. A pid is reused (pid_max is 32,768 on many
    machines, this one included): the start time tells two processes with
    one pid apart, the name an exec since."""
    cut = stat.rindex(b")")
    return stat[stat.index(b"(") + 1:cut], int(stat[cut + 2:].split(None, 20)[19])


def _unread(error: str | None = None) -> dict:
    return {"ppid": None, "sid": None, "parent_comm": None, "session_leader": None,
            "exe": None, "cmdline": None, "proc_error": error}


def read_process(pid: int, stat: bytes | None = None) -> dict:
    """What /proc says of pid (stat: its /proc/PID/stat, when already read)."""
    info = _unread()
    base = f"/proc/{pid}"
    try:
        after = _fields(stat if stat is not None else _read(f"{base}/stat"))
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


REUSED = "process exited and its pid was reused before it could be read"


class ProcCache:
    def __init__(self, ttl: float = 2.0, size: int = 4096, gone_grace: float | None = None):
        self.ttl_ns = int(ttl * 1e9)
        self.size = size
        # Events without the process's start (get's start_ns 0): a process
        # gone by the time its event is read keeps a reading of it made at
        # most this long before the event (default: ttl), under the event's
        # name (a poller's last round keeps its identity). An unrelated
        # process given it would need all of pid_max's pids used up within
        # that time, and to be gone before its event is read.
        self.gone_grace_ns = int((ttl if gone_grace is None else gone_grace) * 1e9)
        # pid -> (CLOCK_MONOTONIC ns of the reading, ns it was last seen alive
        # as the same process, _instance of its stat or None, info, the names
        # its events came under: the stat's, and its threads' own)
        self._cache: OrderedDict[int, tuple[int, int, tuple | None, dict, set]] = OrderedDict()

    def get(self, pid: int, at_ns: int | None = None, comm: str | None = None, start_ns: int = 0) -> dict:
        """pid's process info, for an event of at_ns (CLOCK_MONOTONIC ns, the
        kernel's bpf_ktime_get_ns), comm (the kernel's name of the connecting
        thread) and start_ns (the process's start_boottime, from the kernel:
        which process exactly) when given.

        A reading is remembered for one process instance (start time and
        name: pids are reused, and an exec renames): a reused pid is never
        given an earlier process's exe, which the whitelist matches on. With
        start_ns see _exact. Without it, a reading of a process that started
        before the event and was seen alive after it is the event's process
        (it held the pid all along): no /proc read at all. Otherwise its
        /proc/PID/stat is read (one read; a reading makes five) to tell:
        started after the event -> REUSED (the event's process is gone);
        gone -> EXITED, unless a reading of a process of the event's name
        that started before the event was seen alive at most gone_grace
        before it (see __init__)."""
        if start_ns:
            return self._exact(pid, comm, start_ticks(start_ns))
        now = time.monotonic_ns()
        hit = self._cache.get(pid)
        fresh = hit is not None and now - hit[0] < self.ttl_ns
        event_boot = None
        if at_ns is not None:
            event_boot = at_ns + time.clock_gettime_ns(time.CLOCK_BOOTTIME) - now
            if fresh and hit[3]["proc_error"] is None and hit[2] is not None and hit[1] >= at_ns \
                    and hit[2][1] * _TICK_NS <= event_boot:
                return dict(hit[3])
        try:
            stat = _read(f"/proc/{pid}/stat")
            instance = _instance(stat)
        except FileNotFoundError:
            # Gone. An exited pid is remembered too (EXITED): a scanner's
            # short-lived children would otherwise cost the failed looks
            # again. Without an event time a reading within ttl stands.
            if fresh and (hit[3]["proc_error"] == EXITED or (at_ns is None and hit[3]["proc_error"] is None)
                          or self._last_seen(hit, at_ns, event_boot, comm)):
                return dict(hit[3])
            return self._remember(pid, now, None, _unread(EXITED))
        except (OSError, ValueError, IndexError):
            stat = instance = None    # read_process says why
        else:
            if event_boot is not None and instance[1] * _TICK_NS > event_boot:
                return _unread(REUSED)   # started after the event: the event's process is gone
            if fresh and hit[2] == instance and hit[3]["proc_error"] is None:
                self._cache[pid] = (hit[0], now, instance, hit[3], hit[4])   # seen alive now
                return dict(hit[3])
        return self._remember(pid, now, instance, read_process(pid, stat))

    def _exact(self, pid: int, comm: str | None, ticks: int) -> dict:
        """The event's process is (pid, ticks): a reading of that instance
        answers, alive or gone, with no /proc read while younger than ttl
        (older: re-read if it still runs). Otherwise /proc/PID/stat says:
        the same start -> read it; another -> REUSED; gone -> EXITED,
        remembered for that instance. An event under another name than the
        reading's is of a thread with a name of its own if the stat still
        shows the reading's name (remembered as one of its names), else of
        the program an exec has put there since (read again)."""
        now = time.monotonic_ns()
        hit = self._cache.get(pid)
        mine = hit is not None and hit[2] is not None and hit[2][1] == ticks
        name = None if comm is None else comm.encode("utf-8", "surrogateescape")
        if mine and hit[3]["proc_error"] == EXITED:
            return dict(hit[3])
        # A live reading of this very process, under one of its names.
        own = mine and hit[3]["proc_error"] is None and (name is None or name in hit[4])
        if own and now - hit[0] < self.ttl_ns:
            return dict(hit[3])
        try:
            stat = _read(f"/proc/{pid}/stat")
            instance = _instance(stat)
        except FileNotFoundError:
            if own:
                return dict(hit[3])   # its own reading: what it was
            return self._remember(pid, now, (name or b"", ticks), _unread(EXITED))
        except (OSError, ValueError, IndexError):
            stat = instance = None    # read_process says why
        else:
            if instance[1] != ticks:
                if own:
                    return dict(hit[3])   # gone, its pid taken since: its reading stands
                return _unread(REUSED)
            if mine and hit[2] == instance and hit[3]["proc_error"] is None and now - hit[0] < self.ttl_ns:
                # The same process under the same name as read (no exec
                # since): the event's name is one of its threads'.
                hit[4].add(name)
                return dict(hit[3])
        info = read_process(pid, stat)
        if info["proc_error"] is not None and mine and hit[2] == instance and hit[3]["proc_error"] is None:
            return dict(hit[3])   # it ended while being read again: its reading stands
        return self._remember(pid, now, instance, info)

    def _last_seen(self, hit: tuple, at_ns: int | None, event_boot: int | None, comm: str | None) -> bool:
        """A live reading of the process the event came from, as far as can
        be told once it is gone (see get)."""
        if at_ns is None or hit[3]["proc_error"] is not None or hit[2] is None:
            return False
        name, start = hit[2]
        return start * _TICK_NS <= event_boot and at_ns - hit[1] <= self.gone_grace_ns and \
            (comm is None or name == comm.encode("utf-8", "surrogateescape"))

    def _remember(self, pid: int, now: int, instance: tuple | None, info: dict) -> dict:
        self._cache[pid] = (now, now, instance, info, {instance[0]} if instance else set())
        self._cache.move_to_end(pid)
        while len(self._cache) > self.size:
            self._cache.popitem(last=False)
        return dict(info)
