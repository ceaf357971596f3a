"""The loader's output contract: versioned JSON lines on stdout.

One object per line, each with "v" (schema version),
"type" and "ts" (ISO-8601 UTC). The schema is docs/events.schema.json and
is described in docs/events.md. Diagnostics never go to stdout.
Every line is flushed as it is written, except connection events: those
are held (EventWriter.hold) and written together once per poll of the
kernel buffer (EventWriter.flush), one write instead of one per event.
"""

from __future__ import annotations

import base64
import json
import select
import sys
import threading
from pathlib import Path
from typing import IO, Any

try:   # requirements.txt has it; without it the json module writes the same lines
    import orjson as _orjson
    _ORJSON_OPTS = _orjson.OPT_APPEND_NEWLINE | _orjson.OPT_NON_STR_KEYS
except ImportError:  # pragma: no cover - a venv without it
    _orjson = None

from .paths import PROJECT_ROOT
from .timefmt import IsoClock

SCHEMA_VERSION = 1
SCHEMA_PATH = PROJECT_ROOT / "docs" / "events.schema.json"
EVENT_TYPES = ("startup", "connection", "lost", "stats", "ban", "unban", "ban_rejected",
               "ban_batch", "flow", "flow_aggregate", "rule", "rule_rejected", "warning", "raw_socket", "egress",
               "udp", "shutdown", "drops", "tcp_health", "accepts", "contain", "contain_rejected")


# Fields that carry bytes chosen by whoever started a process (file names,
# argv, comm): not necessarily UTF-8. Producers hand them over as str
# decoded with "surrogateescape" (what os.readlink/os.fsdecode give), and
# the writer turns them into valid JSON without losing a byte.
BYTE_FIELDS = ("comm", "exe", "cmdline")


def text_of(raw: bytes) -> tuple[str, str | None]:
    """(printable text, base64 of raw or None). Valid UTF-8 is itself;
    anything else becomes UTF-8 text with a \\xNN escape per undecodable
    byte, and the raw bytes in base64 (so a file literally named "\\xff"
    and one with the byte 0xff stay distinguishable)."""
    try:
        return raw.decode("utf-8"), None
    except UnicodeDecodeError:
        return raw.decode("utf-8", "backslashreplace"), base64.b64encode(raw).decode("ascii")


def _raw_of(text: str) -> bytes:
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        # A surrogate that is not an escaped byte (e.g. "\ud800" out of some
        # JSON): keep its code point visible instead.
        return text.encode("utf-8", "backslashreplace")


def scrub_text(text: str) -> str:
    """Any str as text that encodes as UTF-8 (lone surrogates escaped)."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text_of(_raw_of(text))[0]


def scrub_value(value: Any, depth: int = 0) -> Any:
    """scrub_text over every string in a JSON-like value (keys too)."""
    if isinstance(value, str):
        return scrub_text(value)
    if depth > 32:
        return repr(value)[:200]
    if isinstance(value, dict):
        return {scrub_text(str(k)): scrub_value(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [scrub_value(v, depth + 1) for v in value]
    return value


def byte_exact(event: dict) -> dict:
    """The event with every BYTE_FIELDS value as valid UTF-8 text plus
    NAME_b64 (the raw bytes) where the value was not UTF-8, and any other
    stray surrogate escaped, however deep (an egress event's candidates
    name processes too). For an event that did not encode: it rebuilds the
    whole event."""
    out = {}
    for k, v in event.items():
        if k in BYTE_FIELDS and isinstance(v, str):
            text, b64 = text_of(_raw_of(v))
            out[k] = text
            if b64 is not None:
                out[f"{k}_b64"] = b64
        else:
            out[k] = scrub_value(v)
    return out


_now_iso = IsoClock()
HOLD_MAX = 1024   # held lines written at once, whatever the poll (bounds the memory)


def make_event(type_: str, **fields: Any) -> dict:
    if type_ not in EVENT_TYPES:
        raise ValueError(f"unknown event type {type_!r}")
    event = {"v": SCHEMA_VERSION, "type": type_, "ts": fields.pop("ts", None) or _now_iso()}
    event.update(fields)
    return event


class EventWriter:
    """Thread-safe JSON-lines writer. A closed pipe (the analyzer went away)
    is reported once on stderr; the loader keeps enforcing bans.

    Lines are written as UTF-8 bytes whatever the locale, and an event that
    cannot be encoded (non-UTF-8 file names, stray surrogates) is made
    byte-exact first (byte_exact): encoding can never be mistaken for a
    closed pipe, and never stops the stream."""

    def __init__(self, stream: IO[str] | None = None):
        self.stream = stream or sys.stdout
        self._lock = threading.Lock()
        self.broken = False
        self.written = 0
        self.by_type: dict[str, int] = {}  # for the metrics endpoint
        self._held: list[bytes] = []
        # Set while the loader shuts down: the reader (the analyzer, got the
        # same Ctrl-C) may already be gone, and that is no news.
        self.closing = False

    def emit(self, type_: str, **fields: Any) -> dict:
        """Write one event now (and whatever is held before it)."""
        return self._put(type_, fields, True)

    def hold(self, type_: str, **fields: Any) -> dict:
        """Queue one event for the next flush() (or emit(), which keeps the order)."""
        return self._put(type_, fields, False)

    def flush(self) -> None:
        with self._lock:
            self._write(b"")

    def _put(self, type_: str, fields: dict, now: bool) -> dict:
        event = make_event(type_, **fields)
        try:
            line = _encode(event)
        except (UnicodeEncodeError, TypeError, ValueError, RecursionError):
            event = byte_exact(event)
            try:
                line = _encode(event)
            except (TypeError, ValueError, RecursionError) as e:
                # Never expected (the loader builds its events): say so on
                # stdout's reader side as a warning event, not by silence.
                event = make_event("warning", message=f"an event of type {type_} could not be "
                                   f"encoded ({type(e).__name__}); dropped")
                line = _encode(event)
        with self._lock:
            if not self.broken:
                self.written += 1
                self.by_type[type_] = self.by_type.get(type_, 0) + 1
            if now or len(self._held) >= HOLD_MAX:
                self._write(line)
            else:
                self._held.append(line)
        return event

    def _write(self, line: bytes) -> None:
        """Held lines, then `line`, in one write (caller holds the lock)."""
        if self._held:
            line, self._held = b"".join(self._held) + line, []
        if self.broken or not line:
            return
        buffer = getattr(self.stream, "buffer", None)
        try:
            if buffer is not None:
                self.stream.flush()  # anything written as text before stays in order
                _write_all(buffer, line)
                buffer.flush()
            else:
                self.stream.write(line.decode("utf-8"))
                self.stream.flush()
        except (BrokenPipeError, ValueError, OSError):
            self.broken = True
            if not self.closing:
                print("unified_ebpf: stdout closed (reader went away); "
                      "events are no longer written, bans stay enforced",
                      file=sys.stderr, flush=True)


def _write_all(buffer, data: bytes) -> None:
    """Under `python -u` stdout's buffer is the raw file: a write of more
    than a pipe's atomic size (held lines together) may be cut short by a
    signal and returns how much went out; the rest follows, so no line is
    ever left half-written."""
    view = memoryview(data)
    while view:
        n = buffer.write(view)
        if n is None:   # a non-blocking stream that is full: wait for it, then go on
            select.select([], [buffer], [])
            continue
        view = view[n:]


def _encode(event: dict) -> bytes:
    """One event line. orjson writes the same bytes as the json module here
    at a tenth of the cost (the encoder was a quarter of the loader's CPU
    per connection event under a connect flood: docs/benchmarks.md §3);
    what it refuses (lone surrogates, integers past 64 bits) goes the json
    module's way, which keeps its errors: ensure_ascii=False keeps lines
    short for non-Latin text; the strict UTF-8 encode refuses lone
    surrogates (then byte_exact mends them)."""
    if _orjson is not None:
        try:
            return _orjson.dumps(event, option=_ORJSON_OPTS)
        except TypeError:   # orjson.JSONEncodeError is one
            pass
    return (json.dumps(event, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
            + "\n").encode("utf-8")


def load_schema() -> dict:
    return json.loads(Path(SCHEMA_PATH).read_text())
