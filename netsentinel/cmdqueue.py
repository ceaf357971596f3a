"""Consuming a command file in records/ (ban_commands.json, rule_commands.json).

People and tools append commands; the loader consumes them. Under the store
lock the loader reads the list, hands each command to `handle` (which applies
it or refuses it), and then rewrites the file minus exactly the commands it
handled, re-reading first so a command added meanwhile stays. A file that
does not parse gets SETTLE_S to settle (an editor mid-save); if it still does
not parse it is set aside and recorded as refused.
"""

from __future__ import annotations

import json
import time
from typing import Any, Callable

from .store import RecordsStore

SETTLE_S = 0.3


class CommandQueue:
    def __init__(self, store: RecordsStore, name: str, handle: Callable[[Any], None],
                 refuse: Callable[[Any, str], None], commit: Callable[[], None]):
        self.store = store
        self.name = name
        self.handle = handle
        self.refuse = refuse
        self.commit = commit  # persists what handle() changed, before the queue shrinks
        self._sig: tuple | None = None
        self._bad_text: tuple[str, float] | None = None

    def _stat_sig(self) -> tuple | None:
        st = self.store.stat(self.name)
        return None if st is None else (st.st_mtime_ns, st.st_size, st.st_ino)

    def changed(self) -> bool:
        """Cheap check (one lstat) for the run loop."""
        sig = self._stat_sig()
        if sig != self._sig or self._bad_text is not None:
            self._sig = sig
            return sig is not None
        return False

    def process(self) -> int:
        """Handle what is queued; returns how many commands were handled.
        The caller holds nothing; this takes the store lock."""
        with self.store.locked():
            text = self.store.read_text(self.name)
            if text is None or not text.strip():
                self._bad_text = None
                return 0
            try:
                queued = json.loads(text)
            except json.JSONDecodeError as e:
                return self._bad_file(text, f"invalid JSON at line {e.lineno} column {e.colno}: {e.msg}")
            self._bad_text = None
            if isinstance(queued, dict):
                queued = [queued]  # one command written without the list brackets
            if not isinstance(queued, list):
                return self._bad_file(text, f"expected a JSON list of commands, got {type(queued).__name__}")
            if not queued:
                return 0
            for raw in queued:
                self.handle(raw)
            # Save the outcome first: a crash here re-applies (idempotent)
            # rather than loses a command.
            self.commit()
            self._remove_handled(queued)
            return len(queued)

    def _bad_file(self, text: str, error: str) -> int:
        now = time.monotonic()
        if self._bad_text is None or self._bad_text[0] != text:
            self._bad_text = (text, now)  # maybe an editor mid-save: look again soon
            return 0
        if now - self._bad_text[1] < SETTLE_S:
            return 0
        self._bad_text = None
        aside = self.store.set_aside(self.name)
        self.refuse({"raw": text[:4096], "file": aside.name}, f"{self.name}: {error}")
        return 1

    def _remove_handled(self, handled: list) -> None:
        def change(cur: Any) -> list:
            if isinstance(cur, dict):
                cur = [cur]
            left = list(cur) if isinstance(cur, list) else []
            for item in handled:
                for i, queued in enumerate(left):
                    if queued == item:
                        del left[i]
                        break
            return left

        self.store.update(self.name, change, default=[])
        self._sig = self._stat_sig()
