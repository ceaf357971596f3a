"""The rules file's values (docs/ANALYZER.md#rules) read into what a
rule.Rule compiles, and the error that names what is wrong."""

from __future__ import annotations

from typing import Any

from ..errors import NetSentinelError


class RuleFileError(NetSentinelError, ValueError):
    """The rules file is unusable; str() is one line naming the file and rule."""


def ports(spec: Any, where: str) -> dict[int, str]:
    """{"23": "Telnet", "6881-6889": "BitTorrent"} or [23, "6881-6889"] -> {port: label}."""
    items = spec.items() if isinstance(spec, dict) else ((p, "") for p in spec) \
        if isinstance(spec, list) else None
    if items is None:
        raise RuleFileError(f"{where}: ports must be a list or an object of port: label")
    out: dict[int, str] = {}
    for key, label in items:
        text = str(key)
        try:
            lo, _, hi = text.partition("-")
            lo_i, hi_i = int(lo), int(hi or lo)
        except ValueError:
            raise RuleFileError(f"{where}: {text!r} is not a port or a range like 6881-6889") from None
        if not 0 <= lo_i <= hi_i <= 65535:
            raise RuleFileError(f"{where}: port range {text!r} is outside 0-65535")
        for p in range(lo_i, hi_i + 1):
            out[p] = str(label or "")
    return out


def strings(spec: Any, where: str) -> list[str]:
    if not isinstance(spec, list) or not all(isinstance(x, str) and x for x in spec):
        raise RuleFileError(f"{where}: expected a list of strings")
    return spec
