"""The enforcement loop's wake-up (loader/enforceloop.py): a command file
written wakes it at once instead of at its next poll, and the event thread
steps aside while the command goes into the kernel.

The loop looks for commands every POLL_MS; waiting for that poll was, on
average, half of it of every ban's latency, and under a connect flood the
loader's share of the CPU stretches each wait. The threads that see a
write session end (cmdsessions under fanotify, cmdwatch's inotify
follower) set COMMANDS, and so does a writer letting go of records/.lock
(nudge: RecordsStore.append_command renames its file into place, which ends
no session); the loop waits on it with POLL_MS as the upper bound, so
nothing depends on the wake-up: a missed one costs a poll.

GATE: under a flood the event thread runs Python flat out and so holds the
GIL nearly all the time, including while the scheduler has it off the CPU
(beside 16 flat-out processes it runs about a quarter of the time). Every
time the enforcement or fanotify thread comes back from a syscall it needs
the GIL, and each such wait lasted until the event thread's next time
slice: 50-400 ms at a time (measured stage by stage, docs/benchmarks.md
section 2). So while a command is due or being applied the gate is shut,
the event thread runs at a control thread's priority (to get back on a CPU
and let go), and, looking at the gate before each event it decodes, waits
there (without the GIL) until it opens: at most
YIELD_MAX_S, and at most once per shutting, so a long pass (a big
CrowdSec pull) slows event capture down, never stops it. Events wait in
the ring buffer meanwhile (a full one folds connects, kernel/monitor.py):
none is lost, a few are late.
"""

from __future__ import annotations

import os
import threading
from contextlib import contextmanager

COMMANDS = threading.Event()
YIELD_MAX_S = 0.1   # longest the event thread waits for one shutting of the gate
CONTROL_BOOST = 10  # nice levels a control thread runs above the loader (control_thread)


class Gate:
    """Shut while a command is due (poked) or being applied (held); the
    event thread calls pause() before each event. Off (never shut) until
    an enforcement loop runs: with nobody to apply a command, the event
    thread must not wait for one."""

    def __init__(self):
        self._lock = threading.Lock()
        self._open = threading.Event()
        self._open.set()
        self._due = False
        self._held = 0
        self._gen = 0          # shuttings so far
        self._waited = -1      # the shutting the event thread last waited for
        self.enabled = False
        self.shut = False      # read without the lock by the event thread: a hint, re-checked
        self._event_tid: int | None = None   # the event thread, and its own nice level
        self._event_nice = 0

    def due(self) -> None:
        with self._lock:
            self._due = self.enabled
            self._update()

    def is_due(self) -> bool:
        return self._due

    @contextmanager
    def held(self, hold: bool = True):
        """Shut while the block runs (and clear a due poke: this is its pass)."""
        if not hold:
            yield
            return
        with self._lock:
            self._due = False
            self._held += 1
            self._update()
        try:
            yield
        finally:
            with self._lock:
                self._held -= 1
                self._update()

    def enable(self, on: bool) -> None:
        """On: called by the event thread itself, which the gate then also
        raises to a control thread's priority while shut (see _update)."""
        with self._lock:
            self.enabled = on
            if on:
                self._event_tid = threading.get_native_id()
                self._event_nice = os.getpriority(os.PRIO_PROCESS, self._event_tid)
            else:
                self._due = False
            self._update()

    def _update(self) -> None:
        shut = self.enabled and (self._due or self._held > 0)
        if shut and not self.shut:
            self._gen += 1
        if shut != self.shut and self._event_tid is not None:
            # Shut: the event thread may be holding the GIL while off the CPU
            # (in a garbage collection, a stack sample); at a control thread's
            # priority it gets back on it at once and reaches pause().
            _renice(self._event_tid, self._event_nice - (CONTROL_BOOST if shut else 0))
        self.shut = shut
        if shut:
            self._open.clear()
        else:
            self._open.set()

    def pause(self) -> None:
        """The event thread: wait while the gate is shut (see the top)."""
        if self.shut and self._waited != self._gen:
            self._waited = self._gen
            self._open.wait(YIELD_MAX_S)


GATE = Gate()


def poke() -> None:
    """A command was written (a session on a command file ended): the
    loop's next pass applies it, the event thread steps aside until then."""
    GATE.due()
    COMMANDS.set()


def nudge() -> None:
    """Something may have changed (a writer let go of the records lock): the
    loop looks now; the gate shuts only if its look finds a command."""
    COMMANDS.set()


def _renice(tid: int, nice: int) -> None:
    try:
        os.setpriority(os.PRIO_PROCESS, tid, max(-20, nice))
    except OSError:   # the thread gone, or no CAP_SYS_NICE (said at start)
        pass


def control_thread() -> None:
    """Raise the calling thread CONTROL_BOOST nice levels above the rest of
    the loader: the threads a ban goes through (command sessions, the
    enforcement loop, the protected set) sleep nearly always and then have
    a few milliseconds of work that must not queue for a CPU behind a flood
    of local processes (beside 16 of them one ban waited 50-200 ms per
    hand-over). Linux sets nice per thread. Without CAP_SYS_NICE it stays
    as it is: the loader said so at start (cli.boost_priority)."""
    tid = threading.get_native_id()
    _renice(tid, os.getpriority(os.PRIO_PROCESS, tid) - CONTROL_BOOST)
