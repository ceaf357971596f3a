"""The loader's output contract: versioned JSON lines on stdout.

One object per line, flushed per line, each with "v" (schema version),
"type" and "ts" (ISO-8601 UTC). The schema is docs/events.schema.json and
is described in docs/events.md. Diagnostics never go to stdout.
"""

from __future__ import annotations

import json
import sys
import threading
from pathlib import Path
from typing import IO, Any

from .paths import PROJECT_ROOT
from .timefmt import utc_now_iso

SCHEMA_VERSION = 1
SCHEMA_PATH = PROJECT_ROOT / "docs" / "events.schema.json"
EVENT_TYPES = ("startup", "connection", "lost", "stats", "ban", "unban", "ban_rejected",
               "flow", "rule", "rule_rejected", "warning", "shutdown", "drops",
               "tcp_health")


def make_event(type_: str, **fields: Any) -> dict:
    if type_ not in EVENT_TYPES:
        raise ValueError(f"unknown event type {type_!r}")
    event = {"v": SCHEMA_VERSION, "type": type_, "ts": fields.pop("ts", None) or utc_now_iso()}
    event.update(fields)
    return event


class EventWriter:
    """Thread-safe JSON-lines writer. A closed pipe (the analyzer went away)
    is reported once on stderr; the loader keeps enforcing bans."""

    def __init__(self, stream: IO[str] | None = None):
        self.stream = stream or sys.stdout
        self._lock = threading.Lock()
        self.broken = False
        self.written = 0
        # Set while the loader shuts down: the reader (the analyzer, got the
        # same Ctrl-C) may already be gone, and that is no news.
        self.closing = False

    def emit(self, type_: str, **fields: Any) -> dict:
        event = make_event(type_, **fields)
        line = json.dumps(event, ensure_ascii=False, separators=(",", ":")) + "\n"
        with self._lock:
            if self.broken:
                return event
            try:
                self.stream.write(line)
                self.stream.flush()
                self.written += 1
            except (BrokenPipeError, ValueError):
                self.broken = True
                if not self.closing:
                    print("unified_ebpf: stdout closed (reader went away); "
                          "events are no longer written, bans stay enforced",
                          file=sys.stderr, flush=True)
        return event


def load_schema() -> dict:
    return json.loads(Path(SCHEMA_PATH).read_text())
