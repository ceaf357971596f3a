"""Events: the analyzer's recent verdicts, filterable and searchable."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from .context import Ctx
from ..levels import LEVELS
from .data import log_frame

COLUMNS = ["time", "level", "process", "destination", "port", "verdict", "reason", "source",
           "backend", "confidence", "exe", "pid", "uid", "rules", "id"]
SEARCHED = ["process", "exe", "destination", "verdict", "reason", "rules", "backend"]


def filtered(df: pd.DataFrame, levels: list[str], sources: list[str], text: str) -> pd.DataFrame:
    out = df[df["level"].isin(levels)]
    if sources:
        out = out[out["source"].isin(sources)]
    text = text.strip().lower()
    if text:
        hay = out[SEARCHED].astype(str).agg(" ".join, axis=1).str.lower()
        port_hit = out["port"].astype(str) == text
        out = out[hay.str.contains(text, regex=False) | port_hit]
    return out


def render(ctx: Ctx) -> None:
    st.header("Events")
    df = log_frame(ctx.snap.log_entries)
    c1, c2, c3, c4 = st.columns([2, 2, 3, 1])
    levels = c1.multiselect("Level", LEVELS, default=list(LEVELS), key="events_levels")
    sources = c2.multiselect("Verdict source", sorted(x for x in df["source"].unique() if x),
                             key="events_sources", placeholder="all")
    text = c3.text_input("Search", key="events_search",
                         placeholder="process, destination, port, reason ...")
    limit = c4.number_input("Rows", min_value=10, max_value=5000, value=500, step=100,
                            key="events_limit")
    out = filtered(df, levels, sources, text).iloc[::-1].head(int(limit))
    st.caption(f"{len(out)} shown of {len(df)} recent events (newest first)")
    if df.empty:
        st.info("No analysed events yet (records/dashboard_logs.json is written by the analyzer).")
        return
    st.dataframe(
        out[COLUMNS], hide_index=True, key="events_table",
        column_config={
            "time": st.column_config.DatetimeColumn("time (UTC)", format="YYYY-MM-DD HH:mm:ss"),
            "port": st.column_config.NumberColumn(format="%d"),
            "confidence": st.column_config.ProgressColumn(min_value=0.0, max_value=1.0, format="%.2f"),
            "reason": st.column_config.TextColumn(width="large"),
        })
