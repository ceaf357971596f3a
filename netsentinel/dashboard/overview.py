"""Overview: live counters, events over time by level, top destinations and processes."""

from __future__ import annotations

import time

import altair as alt
import pandas as pd
import streamlit as st

from .context import Ctx
from ..levels import LEVELS, rank
from .data import log_frame, ts_of
from .status import liveness
from .ui import LEVEL_COLORS, md

TOP_N = 10
TOP_COLUMNS = {"last": st.column_config.DatetimeColumn("last seen (UTC)", format="HH:mm:ss"),
               "port": st.column_config.NumberColumn(format="%d"),
               "worst": st.column_config.TextColumn("worst level")}


def _per_minute(ctx: Ctx, df: pd.DataFrame, now: float) -> tuple[float, str]:
    st_ = ctx.snap.analyzer_status
    if liveness("analyzer", st_, now).running and isinstance(st_.get("events_per_minute"),
                                                               (int, float)):
        return float(st_["events_per_minute"]), "analyzer, last minute"
    recent = df["time"] >= pd.Timestamp(now - 60, unit="s", tz="UTC")
    return float(recent.sum()), "recent events window, last minute"


def _level_counts(ctx: Ctx, df: pd.DataFrame) -> tuple[dict, str]:
    counts = ctx.snap.analyzer_status.get("counts")
    if isinstance(counts, dict) and all(isinstance(counts.get(lv, 0), int) for lv in LEVELS):
        return {lv: counts.get(lv, 0) for lv in LEVELS}, "since the analyzer started"
    vc = df["level"].value_counts()
    return {lv: int(vc.get(lv, 0)) for lv in LEVELS}, f"in the last {len(df)} events"


def _drops(ctx: Ctx) -> int:
    stats = ctx.snap.loader_status.get("stats")
    if isinstance(stats, dict) and isinstance(stats.get("drops_total"), int):
        return stats["drops_total"]
    return sum(b.get("drops", 0) for b in ctx.snap.bans.values() if isinstance(b.get("drops"), int))


def compact(n: float) -> str:
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.3g}{unit}"  # 112k, 18.3k, 1.5M: fits a narrow card
    return f"{n:.0f}"


def counters(ctx: Ctx, df: pd.DataFrame, now: float) -> None:
    per_min, per_min_src = _per_minute(ctx, df, now)
    levels, levels_src = _level_counts(ctx, df)
    cols = st.columns(7)
    cols[0].metric("Conn / min", f"{per_min:.0f}", help=f"connections per minute, from the {per_min_src}",
                   border=True)
    for col, lv in zip(cols[1:4], ("CRITICAL", "HIGH", "MEDIUM")):
        col.metric(lv.title(), levels[lv], help=f"{lv} verdicts {levels_src}", border=True)
    pending = ctx.snap.pending
    crit = sum(1 for t in pending if t.get("level") == "CRITICAL")
    cols[4].metric("Pending", len(pending), help=f"threats waiting for review, {crit} of them CRITICAL",
                   border=True)
    cols[5].metric("Bans", len(ctx.snap.bans), help="active bans", border=True)
    drops = _drops(ctx)
    cols[6].metric("Dropped", compact(drops), help=f"{drops:,} packets dropped by the XDP ban filter",
                   border=True)


def timeline(df: pd.DataFrame) -> None:
    if df.empty:
        st.info("No analysed events yet. They appear here as soon as the analyzer writes "
                "dashboard_logs.json.")
        return
    span = (df["time"].max() - df["time"].min()).total_seconds()
    freq = "1min" if span <= 3 * 3600 else "10min" if span <= 24 * 3600 else "1h"
    binned = (df.assign(bucket=df["time"].dt.floor(freq))
              .groupby(["bucket", "level"]).size().reset_index(name="events"))
    chart = (alt.Chart(binned).mark_bar()
             .encode(x=alt.X("bucket:T", title=f"time (UTC, per {freq})", axis=alt.Axis(format="%H:%M"),
                             scale=alt.Scale(type="utc")),
                     y=alt.Y("events:Q", title="events", stack=True),
                     color=alt.Color("level:N", sort=list(LEVELS),
                                     scale=alt.Scale(domain=list(LEVELS),
                                                     range=[LEVEL_COLORS[lv] for lv in LEVELS])),
                     order=alt.Order("level_rank:Q"),
                     tooltip=["bucket:T", "level:N", "events:Q"])
             .transform_calculate(level_rank=f"indexof({list(LEVELS)!r}, datum.level)")
             .properties(height=260))
    st.altair_chart(chart, width="stretch")


def _top(df: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    g = df.assign(rank=df["level"].map(rank)).groupby(by, dropna=False)
    out = g.agg(events=("id", "size"), worst=("rank", "max"), last=("time", "max")).reset_index()
    out["worst"] = out["worst"].map(dict(enumerate(LEVELS)))
    return out.sort_values(["events", "last"], ascending=False).head(TOP_N)


def tops(df: pd.DataFrame) -> None:
    left, right = st.columns(2)
    with left:
        st.subheader("Top destinations")
        if not df.empty:
            st.dataframe(_top(df, ["destination", "port"]), hide_index=True, key="top_destinations",
                         column_config=TOP_COLUMNS)
    with right:
        st.subheader("Top processes")
        if not df.empty:
            st.dataframe(_top(df, ["process", "exe"]), hide_index=True, key="top_processes",
                         column_config=TOP_COLUMNS)


def render(ctx: Ctx) -> None:
    st.header("Overview")
    now = time.time()
    down = [live.text for live in (liveness("loader", ctx.snap.loader_status, now),
                                   liveness("analyzer", ctx.snap.analyzer_status, now))
            if not live.running]
    if down:
        st.info(md(" · ".join(down)) + ". Start both with `sudo make run`; what is shown here is "
                "what they last wrote.")
    df = log_frame(ctx.snap.log_entries)
    counters(ctx, df, now)
    logs_at = ts_of(ctx.snap.analyzer_status.get("updated_at"))
    st.caption(f"{len(df)} recent events in the window"
               + (f" · analyzer status {time.strftime('%H:%M:%S', time.gmtime(logs_at))} UTC"
                  if logs_at else ""))
    timeline(df)
    tops(df)
