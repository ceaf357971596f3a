"""The threat levels, lowest first: the one vocabulary the analyzer, the
threat records and the dashboard share.

INFO < MEDIUM < HIGH < CRITICAL. HIGH and CRITICAL are threats (they go to
records/pending_threats.json for a person); below that a verdict is only
logged.
"""

from __future__ import annotations

LEVELS = ("INFO", "MEDIUM", "HIGH", "CRITICAL")
THREAT_LEVELS = ("HIGH", "CRITICAL")  # what goes to pending_threats.json
_RANK = {level: i for i, level in enumerate(LEVELS)}


def rank(level: str | None) -> int:
    """Position in LEVELS; -1 for anything else, so a known level always
    outranks a missing or garbled one."""
    return _RANK.get(level or "", -1)


def is_level(level: object) -> bool:
    return isinstance(level, str) and level in _RANK
