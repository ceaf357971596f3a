"""One decision, one stderr line, in a stable key=value form (logfmt).

    event=ban component=loader ip=10.0.0.2 result=applied source=manual reason="Malicious scan"

journald, `journalctl -u netsentinel | grep event=ban` and log shippers
(Loki, Vector, fluent-bit) read it without a parser of ours. The keys are a
contract (docs/SERVICE.md): "event" and "component" come first, then the
fields in the order given; a value with a space, quote, '=' or nothing in it
is double-quoted with backslash escapes; None is left out; a value longer
than MAX_VALUE characters is cut, saying how long it was.
"""

from __future__ import annotations

import sys
from typing import Any, TextIO

MAX_VALUE = 300  # characters per value: a hostile reason or command must not flood the journal
_PLAIN = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
                   "-_.:/@+,[]%")


def value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    s = str(v)
    if len(s) > MAX_VALUE:
        s = f"{s[:MAX_VALUE]}... ({len(s)} characters)"
    if s and all(c in _PLAIN for c in s):
        return s
    s = s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r")
    return f'"{s}"'


def line(event: str, component: str, **fields: Any) -> str:
    parts = [f"event={value(event)}", f"component={value(component)}"]
    parts += [f"{k}={value(v)}" for k, v in fields.items() if v is not None]
    return " ".join(parts)


def parse(text: str) -> dict[str, str]:
    """The inverse of line() (for tests and for people's scripts in Python)."""
    out: dict[str, str] = {}
    i, n = 0, len(text)
    while i < n:
        while i < n and text[i] == " ":
            i += 1
        eq = text.find("=", i)
        if eq < 0:
            break
        key, i = text[i:eq], eq + 1
        if i < n and text[i] == '"':
            i += 1
            buf = []
            while i < n and text[i] != '"':
                if text[i] == "\\" and i + 1 < n:
                    i += 1
                    buf.append({"n": "\n", "r": "\r"}.get(text[i], text[i]))
                else:
                    buf.append(text[i])
                i += 1
            out[key] = "".join(buf)
            i += 1
        else:
            end = text.find(" ", i)
            end = n if end < 0 else end
            out[key], i = text[i:end], end
    return out


def log(event: str, component: str, stream: TextIO | None = None, **fields: Any) -> None:
    """Write one decision line to stderr (or stream), flushed at once."""
    print(line(event, component, **fields), file=stream or sys.stderr, flush=True)
