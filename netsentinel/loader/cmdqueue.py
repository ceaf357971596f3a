"""Consuming a command file in records/ (ban_commands.json, rule_commands.json).

People and tools append commands; the loader consumes them. Under the store
lock the loader reads the list, hands each command to `handle` (which applies
it or refuses it), persists the outcome (`commit`), and only then rewrites the
file minus exactly the commands it handled, re-reading first so a command
added meanwhile stays.

Tools write through the store's lock; people do not: `echo ... > file`
truncates the file and writes it in place, and may do so at any moment. So:
- a file that does not parse gets SETTLE_S to settle (an editor mid-save); if
  it still does not parse it is set aside and recorded as refused;
- the queue is never rewritten over an empty or half-written file: the
  removal waits (the handled commands are remembered, not handled twice);
- after the rewrite, the replaced file is checked for a late in-place write,
  and any command found there is put back in the queue.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any, Callable

from ..store import RecordsStore
from ..watch import FileSignature

SETTLE_S = 0.3


def _without(items: list, remove: list) -> list:
    """items minus remove, matching each removed item once (first match)."""
    left = list(items)
    for item in remove:
        for i, queued in enumerate(left):
            if queued == item:
                del left[i]
                break
    return left


class CommandQueue:
    def __init__(self, store: RecordsStore, name: str, handle: Callable[[Any], None],
                 refuse: Callable[[Any, str], None], commit: Callable[[], None]):
        self.store = store
        self.name = name
        self.handle = handle
        self.refuse = refuse
        self.commit = commit  # persists what handle() changed, before the queue shrinks
        self._watch = FileSignature(store.path(name))
        self._bad_text: tuple[str, float] | None = None
        self._handled_unremoved: list = []  # handled, still in the file (removal deferred)

    def changed(self) -> bool:
        """Cheap check for the run loop (one lstat; a small read while the
        file is seconds old, see netsentinel/watch.py)."""
        if self._watch.changed() or self._bad_text is not None or self._handled_unremoved:
            return self._watch.present
        return False

    @staticmethod
    def _parse(text: str) -> list | None:
        try:
            data = json.loads(text)
        except json.JSONDecodeError:
            return None
        if isinstance(data, dict):
            return [data]  # one command written without the list brackets
        return data if isinstance(data, list) else None

    def process(self) -> int:
        """Handle what is queued; returns how many commands were handled."""
        with self.store.locked():
            text = self.store.read_text(self.name)
            if text is None or not text.strip():
                self._bad_text = None
                return 0
            queued = self._parse(text)
            if queued is None:
                try:
                    json.loads(text)
                    error = "expected a JSON list of commands"
                except json.JSONDecodeError as e:
                    error = f"invalid JSON at line {e.lineno} column {e.colno}: {e.msg}"
                return self._bad_file(text, error)
            self._bad_text = None
            fresh = _without(queued, self._handled_unremoved)
            for raw in fresh:
                self.handle(raw)
            if fresh:
                # Save the outcome first: a crash from here on re-applies
                # (idempotent) rather than loses a command.
                self.commit()
            self._handled_unremoved += fresh
            if self._handled_unremoved:
                self._remove_handled()
            return len(fresh)

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
        self.refuse({"raw": text[:4096], "file": aside.name}, f"{self.name}: {error}")
        return 1

    def _remove_handled(self) -> None:
        """Rewrite the queue without what was handled, unless a person is
        writing it right now (then try again on the next pass)."""
        path = self.store.path(self.name)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            self._handled_unremoved = []
            return
        try:
            before = os.fstat(fd)
            text = os.read(fd, before.st_size + 1).decode("utf-8", "replace")
            current = self._parse(text) if text.strip() else None
            if current is None:
                return  # empty or half-written: someone is writing; keep the handled list
            self.store.write(self.name, _without(current, self._handled_unremoved))
            self._handled_unremoved = []
            self._recover_late_write(fd, before, current)
        finally:
            os.close(fd)
            self._watch.remember()

    def _recover_late_write(self, fd: int, before: os.stat_result, seen: list) -> None:
        """A writer that opened the file before our replace writes into the
        old inode: put what it wrote back into the queue."""
        deadline = time.monotonic() + SETTLE_S
        st = os.fstat(fd)
        if (st.st_size, st.st_mtime_ns) == (before.st_size, before.st_mtime_ns):
            return
        while time.monotonic() < deadline:  # let it finish writing
            time.sleep(0.02)
            again = os.fstat(fd)
            if (again.st_size, again.st_mtime_ns) == (st.st_size, st.st_mtime_ns):
                break
            st = again
        os.lseek(fd, 0, os.SEEK_SET)
        text = os.read(fd, st.st_size + 1).decode("utf-8", "replace")
        late = self._parse(text)
        if late is None:
            self.refuse({"raw": text[:4096]}, f"{self.name}: a late write did not parse")
            return
        extra = _without(late, seen)
        if extra:
            self.store.update(self.name, lambda cur: (cur if isinstance(cur, list) else []) + extra,
                              default=[])
