"""Reading the loader's stream: one JSON object per line, schema v1
(docs/events.md). Every line is hostile until checked: a line over
MAX_LINE bytes is skipped in chunks (never held whole), and a line that is
not JSON, nests deeper than MAX_DEPTH or holds NaN/Infinity/1e400 is
refused with a one-line reason, as is an event with a field of the wrong
type (eventcheck.py). Refusals are reported on stderr at a bounded rate and
kept aside by the caller."""

from __future__ import annotations

import io
import json
import time
from itertools import repeat
from operator import add
from typing import IO, Callable, Iterator

import orjson

from ..events import scrub_value
from ..jsonsafe import finite_float, refuse_constant
from .eventcheck import KNOWN_SHAPES, BadLine, check_event, known_connection_ok, remember_shape

MAX_LINE = 64 * 1024   # a connection event with a 4 KiB cmdline and its base64 is ~12 KiB
MAX_DEPTH = 8          # the loader's deepest event (rule) nests 3
SKIP_CHUNK = 64 * 1024

def read_lines(stream: IO, max_bytes: int = MAX_LINE) -> Iterator[bytes | int]:
    """The lines of a binary (or text) stream, each at most max_bytes; a
    longer line is read past in SKIP_CHUNK pieces and yielded as its length
    (an int) instead, so a 200 MB line costs 64 KiB of memory."""
    for block in read_blocks(stream, max_bytes):
        yield from block


def read_blocks(stream: IO, max_bytes: int = MAX_LINE) -> Iterator[list[bytes | int]]:
    """read_lines by blocks: the lines one read of the stream completed, as
    a list, handed on at once (a block is what the pipe held, never a wait
    for more: a line that arrives alone is a block of one)."""
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
            yield [skipped]
            continue
        yield [line]


def _read_blocks(read1: Callable[[int], bytes], max_bytes: int) -> Iterator[list[bytes | int]]:
    """read_blocks for a buffered binary stream (stdin): whatever the pipe
    holds (up to SKIP_CHUNK) is read at once and cut into lines, not one
    readline call per line; the lines it completed are handed on together
    before the next read. Same lines, same lengths for over-long ones."""
    pending = b""      # the start of a line whose newline has not come yet
    skipped = -1       # bytes of an over-long line read past so far (-1: none)
    while True:
        chunk = read1(SKIP_CHUNK)
        if not chunk:
            if skipped >= 0:
                yield [skipped]
            elif pending:
                yield [pending if len(pending) <= max_bytes else len(pending)]
            return
        block: list[bytes | int] = []
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
                block.append(skipped + start)
                skipped = -1
            else:
                line = pending + chunk[:start]
                pending = b""
                block.append(line if len(line) <= max_bytes + 1 else len(line))
        last = chunk.rfind(b"\n")
        if last >= start:
            pieces = chunk[start:last].split(b"\n")
            if last - start <= max_bytes:   # no line over the cap: each its newline back, in C
                block += map(add, pieces, repeat(b"\n"))
            else:
                block += [piece + b"\n" if len(piece) <= max_bytes else len(piece) + 1 for piece in pieces]
            start = last + 1
        pending = chunk[start:]
        if len(pending) > max_bytes:
            skipped, pending = len(pending), b""
        if block:
            yield block


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
    if _too_deep(obj, text, max_depth):
        raise ValueError(f"nested deeper than {max_depth} levels")
    return obj


def _too_deep(obj, text: str | bytes, max_depth: int) -> bool:
    # Nesting needs a bracket per level: a line with few brackets (every
    # connection event) cannot nest deeper, so it is not walked.
    return isinstance(obj, (dict, list)) and _brackets(text) > max_depth and depth_over(obj, max_depth)


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


# A run of 19 digits or more anywhere in a line (inside a string too): an
# integer there may not fit in 64 bits, which orjson reads as a float where
# the json module keeps an int. Such a line takes the json module's path.
# Found by mapping digits to "0" and all else to " " (a regex \d{19} cost
# more than orjson's whole reading). Looked for only where orjson's reading
# holds a float or a container, which a connection event does not: a flat
# object of ints, strings and nulls read no integer as a float (and nests
# no deeper than 1).
_DIGITS_ONLY = bytes(0x30 if 0x30 <= b <= 0x39 else 0x20 for b in range(256))
_LONG_DIGITS = b"0" * 19
_NOT_PLAIN = {float, dict, list}


def _unplain(line: bytes, ev):
    """orjson's reading ev of line (not a flat object of ints, strings and
    nulls) where that reading is the json module's exactly, else None: the
    json module's path. orjson refuses all that loads() refuses (invalid
    UTF-8, a BOM, NaN/Infinity, 1e400, lone surrogates, control characters
    in strings), and some of what it accepts: every refusal takes the json
    module's path, whose refusal (or reading) and its words then stand
    (tests/test_inputs_fast.py compares both paths)."""
    return None if _LONG_DIGITS in line.translate(_DIGITS_ONLY) else ev


def parse_line(line: bytes | str, *, fast: bool = True) -> dict:
    """The event of one line, or BadLine with why. fast=False: the json
    module only (tests compare both paths). A connection event of a shape
    eventcheck knows has only its values checked (most lines)."""
    if not (fast and isinstance(line, bytes)):
        return _checked(line, None)
    try:
        ev = orjson.loads(line)
    except orjson.JSONDecodeError:
        return _checked(line, None)
    if type(ev) is not dict:
        return _checked(line, _unplain(line, ev))
    shape = (*ev, *map(type, ev.values()))   # eventcheck.shape_of, inline (every line)
    if shape in KNOWN_SHAPES and known_connection_ok(ev):
        return ev
    if not _NOT_PLAIN.isdisjoint(shape[len(ev):]):
        return _checked(line, _unplain(line, ev))
    check_event(ev)
    remember_shape(ev, shape)
    return ev


def _checked(line: bytes | str, ev) -> dict:
    """parse_line's general path, from orjson's reading (None: the json module's)."""
    if ev is None:
        ev = _read_slow(line)
    elif _too_deep(ev, line, MAX_DEPTH):
        raise BadLine(f"nested deeper than {MAX_DEPTH} levels")
    if not isinstance(ev, dict):
        raise BadLine(f"not a JSON object but {type(ev).__name__}")
    check_event(ev)
    return ev


def _read_slow(line: bytes | str):
    """The JSON value of line through the json module (jsonsafe's hooks),
    lone surrogates mended (orjson lets none through: nothing to mend there)."""
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
    if isinstance(ev, dict) and ("\\ud" in line or "\\uD" in line):
        # A "\ud800" escape gives a str no UTF-8 writer accepts: mend such
        # values here, once, so that no later write (records, a model) trips.
        ev = scrub_value(ev)
    return ev


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
