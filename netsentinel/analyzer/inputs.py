"""Reading the loader's stream: one JSON object per line, schema v1
(docs/events.md). Every line is hostile until checked: a line over
MAX_LINE bytes is skipped in chunks (never held whole), and a line that is
not JSON, nests deeper than MAX_DEPTH, holds NaN/Infinity/1e400 or has a
field of the wrong type is refused with a one-line reason. Refusals are
reported on stderr at a bounded rate and kept aside by the caller."""

from __future__ import annotations

import io
import json
import time
from typing import IO, Callable, Iterator

from ..errors import NetSentinelError
from ..events import EVENT_TYPES, SCHEMA_VERSION, scrub_value
from ..jsonsafe import finite_float, refuse_constant
from ..timefmt import parse_iso
from .ipcache import parse_ip

MAX_LINE = 64 * 1024   # a connection event with a 4 KiB cmdline and its base64 is ~12 KiB
MAX_DEPTH = 8          # the loader's deepest event (rule) nests 3
SKIP_CHUNK = 64 * 1024

# Checked by hand rather than with jsonschema: this runs for every event and
# must stay in the microseconds.
_CONN_TYPES = {
    "pid": int, "uid": int, "comm": str, "daddr": str, "dport": int, "family": str,
}
_CONN_NULLABLE = {"ppid": int, "exe": str, "cmdline": str, "saddr": str, "sport": int,
                  "proc_error": str, "tid": int, "mode": str, "comm_b64": str, "exe_b64": str,
                  "cmdline_b64": str, "sid": int, "parent_comm": str, "session_leader": str}
_BY_TYPE = (tuple(k for k, t in _CONN_TYPES.items() if t is int),
            tuple(k for k, t in _CONN_TYPES.items() if t is str),
            tuple(k for k, t in _CONN_NULLABLE.items() if t is int),
            tuple(k for k, t in _CONN_NULLABLE.items() if t is str))
_INT, _STR, _INT_NONE, _STR_NONE = {int}, {str}, {int, type(None)}, {str, type(None)}
assert set(_CONN_TYPES.values()) | set(_CONN_NULLABLE.values()) == {int, str}  # what _BY_TYPE covers
# Flow counters: numbers when present (a missing one counts as 0).
_FLOW_NUMBERS = ("window_s", "pps", "bps", "packets", "bytes", "tcp", "udp", "icmp", "other",
                 "tcp_syn", "tcp_ack", "icmp_echo", "udp_ssdp", "udp_reflect", "pkt_size_mean",
                 "dport_buckets", "rank")
_MAX_NUMBER = 1e15


class BadLine(NetSentinelError, ValueError):
    """An input line that is not an event; str() is the one-line reason."""


def count(v) -> int | None:
    """An event's non-negative integer field (a bool is not one), else None."""
    return v if isinstance(v, int) and not isinstance(v, bool) and v >= 0 else None


def read_lines(stream: IO, max_bytes: int = MAX_LINE) -> Iterator[bytes | int]:
    """The lines of a binary (or text) stream, each at most max_bytes; a
    longer line is read past in SKIP_CHUNK pieces and yielded as its length
    (an int) instead, so a 200 MB line costs 64 KiB of memory."""
    read1 = getattr(stream, "read1", None)
    if read1 is not None and not isinstance(stream, io.TextIOBase):
        yield from _read_blocks(read1, max_bytes)
        return
    while True:
        line = stream.readline(max_bytes + 1)
        if not line:
            return
        nl = "\n" if isinstance(line, str) else b"\n"
        if len(line) > max_bytes and not line.endswith(nl):
            skipped = len(line)
            while True:
                chunk = stream.readline(SKIP_CHUNK)
                skipped += len(chunk)
                if not chunk or chunk.endswith(nl):
                    break
            yield skipped
            continue
        yield line


def _read_blocks(read1: Callable[[int], bytes], max_bytes: int) -> Iterator[bytes | int]:
    """read_lines for a buffered binary stream (stdin): whatever the pipe
    holds (up to SKIP_CHUNK) is read at once and cut into lines, not one
    readline call per line; a line is still handed on as soon as its
    newline arrives. Same lines, same lengths for over-long ones."""
    pending = b""      # the start of a line whose newline has not come yet
    skipped = -1       # bytes of an over-long line read past so far (-1: none)
    while True:
        chunk = read1(SKIP_CHUNK)
        if not chunk:
            if skipped >= 0:
                yield skipped
            elif pending:
                yield pending if len(pending) <= max_bytes else len(pending)
            return
        start = 0
        if skipped >= 0 or pending:
            nl = chunk.find(b"\n")
            if nl < 0:
                if skipped >= 0:
                    skipped += len(chunk)
                else:
                    pending += chunk
                    if len(pending) > max_bytes:
                        skipped, pending = len(pending), b""
                continue
            start = nl + 1
            if skipped >= 0:
                yield skipped + start
                skipped = -1
            else:
                line = pending + chunk[:start]
                pending = b""
                yield line if len(line) <= max_bytes + 1 else len(line)
        last = chunk.rfind(b"\n")
        if last >= start:
            for piece in chunk[start:last].split(b"\n"):
                yield piece + b"\n" if len(piece) <= max_bytes else len(piece) + 1
            start = last + 1
        pending = chunk[start:]
        if len(pending) > max_bytes:
            skipped, pending = len(pending), b""


# One decoder for every line: json.loads with hooks builds a new one per call.
_DECODER = json.JSONDecoder(parse_constant=refuse_constant, parse_float=finite_float)


def loads(text: str | bytes, max_depth: int = MAX_DEPTH):
    """json.loads refusing NaN/Infinity, numbers that overflow to infinity
    and nesting deeper than max_depth; every failure is a ValueError with
    a one-line message."""
    try:
        if isinstance(text, str) and not text.startswith("\ufeff"):
            obj = _DECODER.decode(text)
        else:  # bytes (encoding detected) and a BOM (refused) as json.loads does them
            obj = json.loads(text, parse_constant=refuse_constant, parse_float=finite_float)
    except RecursionError:
        raise ValueError(f"nested deeper than {max_depth} levels") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"not JSON ({e.msg})") from None
    except UnicodeDecodeError:
        raise ValueError("not UTF-8") from None
    # Nesting needs a bracket per level: a line with few brackets (every
    # connection event) cannot nest deeper, so it is not walked.
    if isinstance(obj, (dict, list)) and _brackets(text) > max_depth and depth_over(obj, max_depth):
        raise ValueError(f"nested deeper than {max_depth} levels")
    return obj


def _brackets(text: str | bytes) -> int:
    """How many '{' and '[' text holds (inside strings too: an upper bound on nesting)."""
    if isinstance(text, bytes):
        return text.count(b"{") + text.count(b"[")
    return text.count("{") + text.count("[")


def depth_over(obj, limit: int) -> bool:
    """Does obj nest deeper than limit? Iterative: a hostile document must
    not exhaust the stack of whoever checks it."""
    stack = [(obj, 1)]
    while stack:
        cur, d = stack.pop()
        if isinstance(cur, dict):
            children = cur.values()
        elif isinstance(cur, list):
            children = cur
        else:
            continue
        if d > limit:
            return True
        stack.extend((c, d + 1) for c in children if isinstance(c, (dict, list)))
    return False


def parse_line(line: bytes | str) -> dict:
    """The event of one line, or BadLine with why."""
    if isinstance(line, bytes):
        try:
            line = line.decode("utf-8")
        except UnicodeDecodeError:
            raise BadLine("not UTF-8 (the loader writes UTF-8; non-UTF-8 names travel "
                          "as text plus *_b64)") from None
    try:
        ev = loads(line)
    except ValueError as e:
        raise BadLine(str(e)) from None
    if not isinstance(ev, dict):
        raise BadLine(f"not a JSON object but {type(ev).__name__}")
    if "\\ud" in line or "\\uD" in line:
        # A "\ud800" escape gives a str no UTF-8 writer accepts: mend such
        # values here, once, so that no later write (records, a model) trips.
        ev = scrub_value(ev)
    if ev.get("v") != SCHEMA_VERSION:
        raise BadLine(f"not a v{SCHEMA_VERSION} event (v={_show(ev.get('v'))})")
    if ev.get("type") not in EVENT_TYPES:
        raise BadLine(f"unknown event type {_show(ev.get('type'))}")
    if not isinstance(ev.get("ts"), str):
        raise BadLine("missing ts")
    try:
        event_seconds(ev["ts"])
    except (ValueError, TypeError):
        raise BadLine(f"ts {_show(ev['ts'])} is not an ISO-8601 time") from None
    if ev["type"] == "connection":
        _check_connection(ev)
    elif ev["type"] == "flow":
        _check_flow(ev)
    elif ev["type"] == "flow_aggregate":
        _check_aggregate(ev)
    return ev


_last_ts: tuple = ("", None)   # the last time text read and its value (one tuple, swapped whole)


def event_seconds(text: str):
    """parse_iso(text), remembered for the last text: the reader checks an
    event's time, then the rules read the same text again."""
    global _last_ts
    last = _last_ts
    if text and last[0] == text:
        return last[1]
    value = parse_iso(text)
    _last_ts = (text, value)
    return value


def _types_ok(ev: dict) -> bool:
    """Every typed field of a connection event right, in a few C-level
    passes (the loops below then only run to name what is wrong)."""
    get = ev.get
    return (set(map(type, map(get, _BY_TYPE[0]))) <= _INT and set(map(type, map(get, _BY_TYPE[1]))) <= _STR
            and set(map(type, map(get, _BY_TYPE[2]))) <= _INT_NONE
            and set(map(type, map(get, _BY_TYPE[3]))) <= _STR_NONE)


def _check_connection(ev: dict) -> None:
    # `type(v) is t`: JSON gives exact types, and a bool is then not an int.
    if _types_ok(ev):
        _check_values(ev)
        return
    for k, t in _CONN_TYPES.items():
        v = ev.get(k)
        if type(v) is not t:
            raise BadLine(f"connection event: {k} must be {t.__name__}, got {_show(v)}")
    for k, t in _CONN_NULLABLE.items():
        v = ev.get(k)
        if v is not None and type(v) is not t:
            raise BadLine(f"connection event: {k} must be {t.__name__} or null, got {_show(v)}")
    _check_values(ev)


def _check_values(ev: dict) -> None:
    if not 0 <= ev["dport"] <= 65535:
        raise BadLine(f"connection event: dport {ev['dport']} outside 0-65535")
    if ev["family"] not in ("ipv4", "ipv6"):
        raise BadLine(f"connection event: family {_show(ev['family'])}")
    for k in ("pid", "uid"):
        if not 0 <= ev[k] < 1 << 32:
            raise BadLine(f"connection event: {k} {ev[k]} outside 0-4294967295")
    _address("connection event: daddr", ev["daddr"])
    w = ev.get("whitelisted")
    if w is not None and not isinstance(w, (str, bool)):
        raise BadLine(f"connection event: whitelisted must be a string, got {_show(w)}")


def _check_flow(ev: dict) -> None:
    _address("flow event: src", ev.get("src"))
    for k in _FLOW_NUMBERS:
        v = ev.get(k, 0)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v <= _MAX_NUMBER:
            raise BadLine(f"flow event: {k} must be a number 0-{_MAX_NUMBER:g}, got {_show(v)}")


def _check_aggregate(ev: dict) -> None:
    if ev.get("kind") not in ("syn", "udp", "icmp"):
        raise BadLine(f"flow_aggregate event: kind must be syn, udp or icmp, got {_show(ev.get('kind'))}")
    d = ev.get("dport")
    if d is not None and (isinstance(d, bool) or not isinstance(d, int) or not 0 <= d <= 65535):
        raise BadLine(f"flow_aggregate event: dport must be 0-65535 or null, got {_show(d)}")
    for k in ("packets", "window_s", "pps"):
        v = ev.get(k, 0)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v <= _MAX_NUMBER:
            raise BadLine(f"flow_aggregate event: {k} must be a number 0-{_MAX_NUMBER:g}, got {_show(v)}")


def _address(what: str, value) -> None:
    if not isinstance(value, str):
        raise BadLine(f"{what} must be an address string, got {_show(value)}")
    if parse_ip(value) is None:
        raise BadLine(f"{what} {_show(value)} is not an IP address")


def _show(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


class RateLimitedWarn:
    """At most one message per `every` seconds; the rest are counted and
    mentioned with the next message (or by flush())."""

    def __init__(self, warn: Callable[[str], None], every: float = 1.0):
        self.warn = warn
        self.every = every
        self._last = -1e9
        self.suppressed = 0

    def __call__(self, msg: str) -> None:
        now = time.monotonic()
        if now - self._last < self.every:
            self.suppressed += 1
            return
        self._last = now
        if self.suppressed:
            msg += f" ({self.suppressed} similar warnings suppressed)"
            self.suppressed = 0
        self.warn(msg)

    def flush(self, what: str) -> None:
        if self.suppressed:
            self.warn(f"{self.suppressed} more {what} suppressed")
            self.suppressed = 0
