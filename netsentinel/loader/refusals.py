"""Refusing a queued command, the same way for the ban and the rule table:
one line on stderr, the command and why in the matching *.rejected.json,
and a *_rejected event on the stream."""

from __future__ import annotations

from typing import Any, Callable

from .. import jsonsafe
from ..store import RecordsStore


class Refusals:
    def __init__(self, store: RecordsStore, rejected_file: str, event: str, what: str,
                 warn: Callable[[str], None], emit: Callable[..., Any]):
        self.store, self.rejected_file, self.event, self.what = store, rejected_file, event, what
        self.warn, self.emit = warn, emit
        self.count = 0
        # The reference of the command being handled (CommandQueue.current_ref),
        # so a command handled again after a crash is refused once.
        self.ref: Callable[[], str | None] = lambda: None

    def __call__(self, raw: Any, error: str) -> None:
        self.count += 1
        self.warn(f"refused {self.what} {jsonsafe.dumps_line(raw)}: {error}")
        self.store.reject_command(raw, error, name=self.rejected_file, ref=self.ref())
        self.emit(self.event, command=raw, error=error)
