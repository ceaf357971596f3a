"""The command file without fanotify: read in place, consumed by rewriting
it, and the writes nobody read counted (CommandQueue's counting path; with
fanotify, loader/cmdfan.py serialises the writers and this is not used).

Tools write through the store's lock; people do not:
`echo ... > file` truncates the file and writes it in place, at any moment.
- a file that does not parse gets SETTLE_S to settle (an editor mid-save); if
  it still does not parse it is set aside and recorded as refused;
- several JSON values one after another (`echo ... >> file` twice) are all
  read; a value may be one command or a list of them;
- the queue is never rewritten over an empty or half-written file: the
  removal waits (the handled commands are remembered, not handled twice);
- whatever the loader has read it handles in the same pass: commands written
  between our read and the rewrite, and a late in-place write into the
  replaced file (put back in the queue first, so a crash keeps it). Left in
  the file for the next pass, a person's next `>` could wipe them after they
  were counted as seen: neither applied nor reported.
A write that another `>` replaces before the loader reads it cannot be
recovered; cmdwatch counts such writes and reports them (and says why a
lease on the file would not have kept them).
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter

from .. import fsguard, jsonsafe
from ..store import StoreError
from .cmdwatch import WriteCounter

SETTLE_S = 0.3


def _keys(commands: list) -> Counter:
    return Counter(json.dumps(c, sort_keys=True) for c in commands)


def _without(items: list, remove: list) -> list:
    """items minus remove, matching each removed item once (first match)."""
    left = list(items)
    for item in remove:
        for i, queued in enumerate(left):
            if queued == item:
                del left[i]
                break
    return left



class CountedFile:
    """CommandQueue's command file when writers are not serialised."""

    def _start_counting(self) -> None:
        try:
            self.watch = WriteCounter(self.store.root, self.name)
        except OSError:
            self.watch = None  # no inotify: losses go undetected, nothing else changes
        try:  # written before we watched: no session we counted
            self._known = _keys(jsonsafe.loads_commands(self.store.read_text(self.name) or ""))
        except (jsonsafe.JsonRefused, StoreError):
            pass


    def _report_lost(self, sessions: int) -> None:
        """Report writes replaced before we read them (cmdwatch): at least
        this many were lost; never more than were."""
        if self._bad_text is not None:
            return  # a write not parsed yet (it may still be settling) is not lost
        balance = sessions - self.own_writes - self.new_seen
        quiet, self._last_sessions = sessions == self._last_sessions, sessions
        if self.watch.take_overflow():  # the kernel dropped events: the count is off from here
            self._lost_base = None
            self.refuse({"file": self.name}, f"{self.name} was written too often to count the "
                        f"writes, so some may be lost; append with >> or queue in {self.drop_name}/")
        if self._lost_base is None:
            if not quiet or self._handled_unremoved:
                return
            # Nothing written since the last look: every session is counted
            # and every command seen, so count from here.
            self._lost_base, self.lost_reported = balance, 0
        lost = balance - self._lost_base
        if lost > self.lost_reported:
            new, self.lost_reported = lost - self.lost_reported, lost
            self.refuse({"file": self.name, "lost_writes": new},
                        f"{new} write(s) to {self.name} were replaced by a later write before "
                        f"the loader read them, so their commands are lost; append with >> "
                        f"or queue in {self.drop_name}/")


    # ------------------------------------------------------------ the command file
    def _process_file(self) -> int:
        try:
            data, st = fsguard.read_capped(self.store.path(self.name), jsonsafe.MAX_BYTES)
        except fsguard.UnsafePath as e:
            return self._unsafe(e)
        text = None if data is None else data.decode("utf-8", "replace")
        if text is None or not text.strip():
            self._bad_text = None
            return 0
        try:
            queued = jsonsafe.loads_commands(text)
        except jsonsafe.JsonRefused as e:
            return self._bad_file(text, str(e))
        self._bad_text = None
        self._count_new(queued)
        fresh = _without(queued, self._handled_unremoved)
        n = self._handle_now(fresh, st, len(queued) - len(fresh))
        if self._handled_unremoved:
            n += self._remove_handled()
        return n

    def _handle_now(self, commands: list, st: os.stat_result, base: int) -> int:
        """Apply each command read from the file (st), save the outcome, and
        remember them for removal. Whatever the loader has read it handles at
        once: a command left in the file for the next pass is one a person's
        next `>` can wipe after it was counted as seen, neither applied nor
        reported."""
        for i, raw in enumerate(commands):
            self._apply(raw, f"{self.name}:{st.st_ino}:{st.st_mtime_ns}:{base + i}")
        if commands:
            # Save the outcome first: a crash from here on re-applies
            # (idempotent) rather than loses a command.
            self.commit()
        self._handled_unremoved += commands
        return len(commands)

    def _count_new(self, commands: list) -> None:
        """Every write session (a person's `>`/`>>`, a tool's replace) adds at
        least one command: count those not in the file when we last looked."""
        now = _keys(commands)
        self.new_seen += sum((now - self._known).values())
        self._known = now

    def _saw_unreadable(self) -> None:
        self.new_seen += 1  # the write that made the file so was seen, not lost
        self._known = Counter()

    def _bad_file(self, text: str, error: str) -> int:
        now = time.monotonic()
        if self._bad_text is None or self._bad_text[0] != text:
            self._bad_text = (text, now)  # maybe an editor mid-save: look again soon
            return 0
        if now - self._bad_text[1] < SETTLE_S:
            return 0
        self._bad_text = None
        self._handled_unremoved = []
        aside = self.store.set_aside(self.name)
        self._saw_unreadable()
        self.refuse({"raw": text[:4096], "file": aside.name}, f"{self.name}: {error}")
        return 1

    def _remove_handled(self) -> int:
        """Rewrite the queue without what was handled, unless a person is
        writing it right now (then try again on the next pass); commands
        written since our read are handled first. Returns how many of those."""
        path = self.store.path(self.name)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
        except FileNotFoundError:
            self._handled_unremoved = []
            return 0
        try:
            before = os.fstat(fd)
            text = os.read(fd, min(before.st_size, jsonsafe.MAX_BYTES) + 1).decode("utf-8", "replace")
            try:
                current = jsonsafe.loads_commands(text) if text.strip() else None
            except jsonsafe.JsonRefused:
                current = None
            if current is None:
                return 0  # empty or half-written: someone is writing; keep the handled list
            self._count_new(current)
            left = _without(current, self._handled_unremoved)
            n = self._handle_now(left, before, len(current) - len(left))
            self.store.write(self.name, [])
            self.own_writes += 1
            self._known = Counter()
            self._handled_unremoved = []
            return n + self._recover_late_write(fd, before, current)
        finally:
            os.close(fd)
            self._watch.remember()

    def _recover_late_write(self, fd: int, before: os.stat_result, seen: list) -> int:
        """A writer that opened the file before our replace writes into the
        old inode: put what it wrote back into the queue (so a crash keeps
        it), then handle it now. Returns how many commands that was."""
        deadline = time.monotonic() + SETTLE_S
        st = os.fstat(fd)
        if (st.st_size, st.st_mtime_ns) == (before.st_size, before.st_mtime_ns):
            return 0
        while time.monotonic() < deadline:  # let it finish writing
            time.sleep(0.02)
            again = os.fstat(fd)
            if (again.st_size, again.st_mtime_ns) == (st.st_size, st.st_mtime_ns):
                break
            st = again
        os.lseek(fd, 0, os.SEEK_SET)
        text = os.read(fd, min(st.st_size, jsonsafe.MAX_BYTES) + 1).decode("utf-8", "replace")
        try:
            late = jsonsafe.loads_commands(text)
        except jsonsafe.JsonRefused as e:
            self.new_seen += 1  # that write was seen (and refused), not lost
            self.refuse({"raw": text[:4096]}, f"{self.name}: a late write was refused: {e}")
            return 0
        extra = _without(late, seen)
        if not extra:
            return 0
        self.store.update(self.name, lambda cur: (cur if isinstance(cur, list) else []) + extra,
                          default=[])
        self.own_writes += 1
        self.new_seen += len(extra)
        self._known += _keys(extra)  # so the next look does not count them again
        return self._handle_now(extra, st, len(late) - len(extra))
