"""The event store as the pages read it (docs/EVENTSTORE.md): opened
read-only for one render and closed after it, a time range picked from a
few fixed spans, and every figure from a query (counts, top lists,
timelines are aggregated in the database): a page never loads the history.
Overview, Events and History share this."""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Iterator

import pandas as pd
import streamlit as st

from ..eventstore import EventStore, describe, open_store, resolve_dsn
from .context import Ctx

RANGES = {"last 15 min": 900, "last hour": 3600, "last 24 h": 86400, "last 7 days": 7 * 86400,
          "everything": None}
# Timeline bucket per range: about 30-90 bars whatever the span.
BUCKETS = {900: 30, 3600: 120, 86400: 1800, 7 * 86400: 6 * 3600, None: 86400}


@contextmanager
def opened(ctx: Ctx) -> Iterator[tuple[EventStore | None, str]]:
    """(store, where) or (None, why not): absent, unreadable or damaged
    history is said on the page and every other part still works."""
    dsn = resolve_dsn(None, ctx.store)
    try:
        db = open_store(dsn, readonly=True)
    except Exception as e:  # noqa: BLE001 (any reason to have no history is shown, not raised)
        yield None, f"No event history at {describe(dsn)} yet ({' '.join(str(e).split())})"
        return
    try:
        if db.schema_version() == 0:
            yield None, f"No event history at {describe(dsn)} yet (no event table)"
        else:
            yield db, describe(dsn)
    except Exception as e:  # noqa: BLE001
        yield None, f"The event history at {describe(dsn)} cannot be read ({' '.join(str(e).split())})"
    finally:
        db.close()


def pick_range(key: str, default: str = "last hour", where=st) -> tuple[str, float | None]:
    """(label, since as Unix seconds or None for everything)."""
    label = where.selectbox("Range", list(RANGES), index=list(RANGES).index(default), key=key)
    span = RANGES[label]
    return label, (time.time() - span if span else None)


def bucket_of(label: str) -> int:
    return BUCKETS[RANGES[label]]


def times(df: pd.DataFrame, column: str) -> pd.DataFrame:
    """Unix seconds in `column` as UTC datetimes (in place, returned)."""
    df[column] = pd.to_datetime(df[column].astype(float), unit="s", utc=True)
    return df
