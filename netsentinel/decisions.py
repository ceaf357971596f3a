"""Deciding reviewed items: the pending threats (threats.py) and the rule
proposals (proposals.py) are both lists of records with an id and a status
(pending, then approved or rejected by a person), and both keep a bounded
number of decided ones. Nothing here decides anything on its own."""

from __future__ import annotations

from typing import Callable

from .errors import DecisionError
from .timefmt import utc_now_iso


def trim_decided(items: list, keep: int) -> list:
    """items without the oldest decided ones beyond `keep`; pending items are
    never dropped."""
    decided = [t for t in items if t.get("status") != "pending"]
    if len(decided) <= keep:
        return items
    drop = {id(t) for t in decided[: len(decided) - keep]}
    return [t for t in items if id(t) not in drop]


def decide(items: list, item_id: str, what: str, status: str, by: str, note: str | None,
           before: Callable[[dict], None] | None = None) -> dict:
    """Mark the pending item with item_id as `status` (in place; returns it).
    before(item) runs first and may raise to leave it pending (a ban that is
    refused). Raises DecisionError for an unknown or already decided id."""
    for item in items:
        if item.get("id") != item_id:
            continue
        if item.get("status") != "pending":
            raise DecisionError(f"{what} {item_id} was already {item.get('status')} "
                                f"by {item.get('decided_by')} at {item.get('decided_at')}")
        if before is not None:
            before(item)
        item.update(status=status, decided_at=utc_now_iso(), decided_by=by, note=note or None)
        return item
    raise DecisionError(f"no {what} with id {item_id}")
