"""Events: the analyzer's latest verdicts from the event store, newest
first, one page at a time, filtered by level and searched in the database
(the History page has the full search, investigation and export)."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from ..eventstore import Query
from ..levels import LEVELS
from .context import Ctx
from .ui import md
from .storeview import opened, pick_range, times

# Page column <- store column.
COLUMNS = {"time": "ts", "level": "level", "process": "comm", "destination": "daddr", "port": "dport",
           "verdict": "category", "reason": "reason", "source": "verdict_source",
           "backend": "backend", "confidence": "confidence", "exe": "exe", "pid": "pid",
           "uid": "uid", "id": "ref"}


def frame(rows: list[dict]) -> pd.DataFrame:
    df = pd.DataFrame([{name: r.get(col) for name, col in COLUMNS.items()} for r in rows],
                      columns=list(COLUMNS))
    return times(df, "time")


def render(ctx: Ctx) -> None:
    st.header("Events")
    c0, c1, c2, c3 = st.columns([2, 3, 3, 1])
    label, since = pick_range("events_range", where=c0)
    levels = c1.multiselect("Level", LEVELS, default=list(LEVELS), key="events_levels")
    text = c2.text_input("Search", key="events_search",
                         placeholder="process, destination, port, reason ...")
    limit = int(c3.number_input("Rows", min_value=10, max_value=5000, value=500, step=100,
                                key="events_limit"))
    with opened(ctx) as (db, where):
        if db is None:
            st.info(md(where) + ": the analyzer writes it.")
            return
        text = text.strip()
        # A number alone is a port; anything else is searched in the text columns.
        port = int(text) if text.isdigit() and int(text) < 65536 else None
        q = Query(since=since, kind="connection", levels=tuple(levels), port=port,
                  text=None if port is not None else (text or None), limit=limit)
        total = db.count(q)
        out = frame(db.search(q))
    st.caption(f"{len(out)} shown of {total} events {label} (newest first; {where})")
    st.dataframe(
        out, hide_index=True, key="events_table",
        column_config={
            "time": st.column_config.DatetimeColumn("time (UTC)", format="YYYY-MM-DD HH:mm:ss"),
            "port": st.column_config.NumberColumn(format="%d"),
            "confidence": st.column_config.ProgressColumn(min_value=0.0, max_value=1.0, format="%.2f"),
            "reason": st.column_config.TextColumn(width="large"),
        })
