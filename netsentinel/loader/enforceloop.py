"""The loader's enforcement loop, on its own thread (docs/ARCHITECTURE.md:
loader/run.py starts it once the bans are back in the kernel).

Every POLL_MS it applies ban and rule commands, expires bans and rules,
follows CrowdSec, copies counters back (every SYNC_EVERY_S) and refreshes
the whitelist the event path matches against. It never waits for events:
under a connect flood the main thread is busy reading the ring buffer, and
a ban must still reach the kernel within a poll or two. A thread waiting
for the GIL gets it from a busy one after the switch interval (5 ms by
default), and a command takes dozens of GIL hand-overs (every stat, read,
bpf() and write gives it up): the loader sets SWITCH_S instead, so a pass
under a flood costs tens of milliseconds, not hundreds. While it applies
commands the event thread waits aside (wake.GATE), and this thread runs
above the rest of the loader (wake.control_thread).

Only this thread touches the ban, rule and contain tables, CrowdSec and the
whitelist file's watch; the main thread reads the published whitelist
(loader._wl) and the tables' sizes for status."""

from __future__ import annotations

import sys
import threading
import time

from ..store import StoreError
from . import wake

POLL_MS = 50            # ban commands are picked up within ~this
COMMAND_RESCAN_S = 1.0  # re-read the queue even if its stat did not change
SYNC_EVERY_S = 2.0      # kernel counters copied into banned_ips.json / rules
SWITCH_S = 0.0005       # sys.setswitchinterval while this loop runs (see the top)


class EnforceLoop:
    def __init__(self, loader):
        self.loader = loader
        self.error: BaseException | None = None   # what ended it, for the main thread to raise
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        sys.setswitchinterval(SWITCH_S)
        wake.GATE.enable(True)
        self._thread = threading.Thread(target=self._guarded, name="enforcement", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """End the loop and wait for its current pass (cleanup saves after it)."""
        if self._thread is not None:
            self._stop.set()
            wake.GATE.enable(False)   # the event thread no longer waits for a pass
            wake.COMMANDS.set()
            self._thread.join()
            self._thread = None

    def _guarded(self) -> None:
        wake.control_thread()
        try:
            self._run()
        except BaseException as e:  # handed to the main thread, which stops and reports it
            self.error = e
            self.loader.stop_reason = self.loader.stop_reason or "error"

    def _run(self) -> None:
        lo = self.loader
        next_scan = next_sync = time.monotonic()
        while not self._stop.is_set():
            wake.COMMANDS.clear()   # before the pass: a write during it wakes the next
            now = time.monotonic()
            lo._wl = lo.whitelist.current()   # the one owner of the whitelist file's watch
            rescan = now >= next_scan
            lo._outcomes = []   # the pass's ban/unban/rule events, written once it has saved
            try:  # nothing in records/ may end the loop (and enforcement with it)
                bans_due = lo.bans.commands_changed()
                rules_due = lo.rules.queue.changed()
                contain_due = bool(lo.contain) and lo.contain.queue.changed()
                # Commands first, with the event thread stepped aside (wake.GATE).
                with wake.GATE.held(bans_due or rules_due or contain_due or wake.GATE.is_due()):
                    if bans_due or rescan:
                        lo.bans.process_commands()
                    if rules_due or rescan:
                        lo.rules.process_commands()
                    if lo.contain and (contain_due or rescan):  # process containment (issue 12)
                        lo.contain.process_commands()
                lo.bans.expire()
                if lo.fleet:
                    lo.fleet.poll(lo.bans)
                lo.rules.expire()
                if lo.contain:
                    lo.contain.expire()
                if rescan:
                    next_scan = now + COMMAND_RESCAN_S
                if now >= next_sync:
                    lo.bans.sync_counters()
                    lo.rules.sync_hits()
                    if lo.contain:
                        lo.contain.sync()
                    next_sync = now + SYNC_EVERY_S
                lo._records_trouble(None)
            except StoreError as e:
                lo._records_trouble(e)
            finally:
                done, lo._outcomes = lo._outcomes, None
                for type_, fields in done:
                    lo.events.emit(type_, **fields)
            # A big CrowdSec pull in progress: no idle wait between its slices.
            # A write to a command file wakes it at once (loader/wake.py).
            if not (lo.fleet and lo.fleet.busy()):
                wake.COMMANDS.wait(POLL_MS / 1000)
