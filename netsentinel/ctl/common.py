"""What the `netsentinel` subcommands share: durations, tables, JSON, errors."""

from __future__ import annotations

import argparse
import json
import re
from typing import Any, NoReturn, Sequence

from .. import paths
from ..cliargs import die
from ..store import RecordsStore
from ..whitelist import WhitelistFile

PROG = "netsentinel"
_UNITS = {"": 1, "s": 1, "m": 60, "min": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|min|m|h|d|w|)\s*$")


def fail(message: str, code: int) -> NoReturn:
    die(PROG, message, code)


def duration_arg(text: str) -> int:
    """'90', '90s', '15m', '1h', '2d', '1w' -> whole seconds (argparse type)."""
    m = _DURATION.match(text or "")
    if not m:
        raise argparse.ArgumentTypeError(
            f"invalid duration {text!r} (a number of seconds, or with s, m, h, d or w: 15m, 1h)")
    seconds = int(float(m.group(1)) * _UNITS[m.group(2)])
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"duration {text!r} must be more than 0 seconds")
    return seconds


def open_store(args) -> RecordsStore:
    return RecordsStore(paths.records_dir(getattr(args, "records", None)))


def whitelist_file(args) -> WhitelistFile:
    return WhitelistFile(paths.config_path(getattr(args, "config", None)))


def print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2, ensure_ascii=False))


def print_table(headers: Sequence[str], rows: list[Sequence[Any]], empty: str) -> None:
    """Columns as wide as their widest cell; the last column is not padded."""
    if not rows:
        print(empty)
        return
    cells = [[str(h) for h in headers]] + [["-" if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers) - 1)]
    for r in cells:
        print("  ".join([c.ljust(w) for c, w in zip(r, widths)] + [r[-1]]).rstrip())


def one_line(text: Any, limit: int = 80) -> str:
    s = " ".join(str(text or "").split())
    return s if len(s) <= limit else s[: limit - 1] + "…"
