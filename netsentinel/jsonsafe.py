"""A total JSON parser for input other people write (records/ commands,
hand-edited files): it either returns plain JSON data or raises JsonRefused
with a one-line reason. It never raises anything else, never recurses deep
enough to crash, and never returns what later code cannot handle:

- more than max_bytes of text: refused before parsing;
- nesting deeper than max_depth: refused before parsing (the stdlib parser
  recurses, and 100,000 '[' end in RecursionError);
- NaN, Infinity and numbers that overflow to them (1e400): refused, since
  float('nan') compares false with every bound a validator checks;
- integers longer than MAX_INT_DIGITS: refused;
- strings (values or keys) with lone surrogates such as "\\ud800": refused,
  since they cannot be written back as UTF-8 and crash whoever tries;
- bytes that are not UTF-8: refused.
"""

from __future__ import annotations

import itertools
import json
import math
import re
from typing import Any

MAX_BYTES = 4 * 1024 * 1024
MAX_DEPTH = 32
MAX_INT_DIGITS = 40

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.S)
_BRACKET = re.compile(r"[\[\]{}]")
_WS = re.compile(r"\s*")


class JsonRefused(ValueError):
    """Input that is not acceptable JSON; str() is the one-line reason."""


def refuse_constant(name: str):
    """json's parse_constant: NaN and Infinity are refused (also for the
    analyzer's event reader, analyzer/inputs.py)."""
    raise JsonRefused(f"{name} is not a number JSON allows")


def finite_float(s: str) -> float:
    """json's parse_float: a number that overflows to infinity is refused."""
    v = float(s)
    if not math.isfinite(v):
        raise JsonRefused(f"number {s[:40]} is out of range")
    return v


def _int(s: str) -> int:
    if len(s.lstrip("-")) > MAX_INT_DIGITS:
        raise JsonRefused(f"integer with {len(s)} digits is too large")
    return int(s)


_DECODER = json.JSONDecoder(parse_constant=refuse_constant, parse_float=finite_float, parse_int=_int)


def _check_depth(text: str, max_depth: int) -> None:
    brackets = _BRACKET.findall(_STRING.sub("", text))
    if not brackets:
        return
    depth = max(itertools.accumulate(1 if b in "[{" else -1 for b in brackets))
    if depth > max_depth:
        raise JsonRefused(f"nested {depth} levels deep (at most {max_depth})")


def _check_strings(value: Any) -> None:
    # Depth is already bounded, so this recursion is too.
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise JsonRefused("a string contains a lone surrogate (\\ud800-\\udfff)") from None
    elif isinstance(value, list):
        for v in value:
            _check_strings(v)
    elif isinstance(value, dict):
        for k, v in value.items():
            _check_strings(k)
            _check_strings(v)


def _text(data: str | bytes, max_bytes: int) -> str:
    if len(data) > max_bytes:
        raise JsonRefused(f"{len(data)} bytes is more than the {max_bytes} allowed")
    if isinstance(data, bytes):
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError as e:
            raise JsonRefused(f"not UTF-8 (byte {e.start})") from None
    return data


def _decode_at(text: str, pos: int) -> tuple[Any, int]:
    try:
        return _DECODER.raw_decode(text, pos)
    except JsonRefused:
        raise
    except json.JSONDecodeError as e:
        raise JsonRefused(f"invalid JSON at line {e.lineno} column {e.colno}: {e.msg}") from None
    except (ValueError, RecursionError) as e:  # int digit limit, anything the depth scan missed
        raise JsonRefused(f"invalid JSON: {str(e)[:120]}") from None


def loads(data: str | bytes, *, max_bytes: int = MAX_BYTES, max_depth: int = MAX_DEPTH) -> Any:
    """One JSON value, or JsonRefused."""
    values = loads_many(data, max_bytes=max_bytes, max_depth=max_depth)
    if len(values) != 1:
        if not values:
            raise JsonRefused("empty")
        raise JsonRefused("extra data after the first JSON value")
    return values[0]


def loads_many(data: str | bytes, *, max_bytes: int = MAX_BYTES,
               max_depth: int = MAX_DEPTH) -> list:
    """Every JSON value in a text holding several one after another
    (`echo '[...]' >> file` twice gives '[...]\\n[...]'); [] when blank."""
    text = _text(data, max_bytes)
    _check_depth(text, max_depth)
    values, pos = [], _WS.match(text, 0).end()
    while pos < len(text):
        value, pos = _decode_at(text, pos)
        _check_strings(value)
        values.append(value)
        pos = _WS.match(text, pos).end()
    return values


def loads_commands(data: str | bytes) -> list:
    """Every command in a command file: each JSON value is a command or a
    list of them (what `>>` appends leave: '[]\n[{...}]\n{...}')."""
    out: list = []
    for value in loads_many(data):
        out.extend(value if isinstance(value, list) else [value])
    return out


def dumps_line(value: Any, limit: int = 200) -> str:
    """A short one-line rendering for messages (never raises)."""
    try:
        s = json.dumps(value, ensure_ascii=True)
    except (ValueError, TypeError, RecursionError):
        s = repr(value)
    return s[:limit]


def dump_bytes(value: Any) -> bytes:
    """value as one line of UTF-8 JSON (what the drop directories hold)."""
    return (json.dumps(value, ensure_ascii=False, allow_nan=False) + "\n").encode()
