"""The analyzer's settings in force: command-line values (the base) under
records/llm_config.json, re-read whenever the file changes. A bad file is
refused with one line on stderr and the previous settings stay."""

from __future__ import annotations

import threading
import time
from typing import Callable

from ..llm.config import load_llm_config
from ..records import LLM_CONFIG
from ..store import RecordsStore
from ..watch import FileSignature

CHECK_EVERY = 0.05  # seconds; a change is in force for the first block of lines read after that


class SettingsWatcher:
    def __init__(self, store: RecordsStore, base: dict, warn: Callable[[str], None]):
        self.store = store
        self.base = base
        self.warn = warn
        self._watch = FileSignature(store.path(LLM_CONFIG))  # first changed() is True: loads
        self._cfg = dict(base)
        self.error: str | None = None
        self.from_file = False
        self.generation = 0   # bumped on every change in force
        self._lock = threading.Lock()
        self._next_check = 0.0

    def current(self) -> dict:
        """The config in force. The file is looked at (one lstat) at most
        every CHECK_EVERY seconds: a syscall per event would hand the GIL
        to the flusher thread and stall the reader for milliseconds."""
        now = time.monotonic()
        if now < self._next_check:
            return self._cfg
        self._next_check = now + CHECK_EVERY
        with self._lock:
            if not self._watch.changed():
                return self._cfg
            cfg, err = load_llm_config(self.store, self.base)
            if err:
                self.error = err
                self.warn(f"{err}; keeping the previous settings")
                return self._cfg
            if self.error:
                self.warn(f"{LLM_CONFIG} is valid again")
            self.error = None
            changed = sorted(k for k in cfg if cfg.get(k) != self._cfg.get(k)
                             and k not in ("updated_at", "updated_by"))
            if changed and self.generation:
                self.warn(f"{LLM_CONFIG} reloaded: "
                          + ", ".join(f"{k}={cfg[k]!r}" for k in changed[:8])
                          + (" ..." if len(changed) > 8 else ""))
            self.from_file = self._watch.present
            self._cfg = cfg
            self.generation += 1
            return cfg
