"""Overview: live counters, threats by level, connections and inbound flows
over time, top destinations and processes. Counters come from the loader's
and analyzer's status files; everything over time from aggregate queries on
the event store (storeview), so a day of history renders as fast as an
empty one."""

from __future__ import annotations

import time

import altair as alt
import pandas as pd
import streamlit as st

from ..eventstore import Query
from ..levels import LEVELS, THREAT_LEVELS
from .context import Ctx
from .status import liveness
from .storeview import bucket_of, opened, pick_range, times
from .ui import LEVEL_COLORS, md

TOP_N = 10
TOP_LATEST = 50_000   # top lists count the newest this many events of the range (a bounded cost)
TOP_COLUMNS = {"last": st.column_config.DatetimeColumn("last seen (UTC)", format="HH:mm:ss"),
               "port": st.column_config.NumberColumn(format="%d"),
               "worst": st.column_config.TextColumn("worst level")}


def _per_minute(ctx: Ctx, db, now: float) -> tuple[float | None, str]:
    st_ = ctx.snap.analyzer_status
    if liveness("analyzer", st_, now).running and isinstance(st_.get("events_per_minute"),
                                                               (int, float)):
        return float(st_["events_per_minute"]), "analyzer, last minute"
    if db is None:
        return None, "no event history"
    return float(db.count(Query(since=now - 60, kind="connection"))), "event history, last minute"


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


def threat_counts(db, since: float | None) -> dict[str, int]:
    """Threats (not events) recorded in the range, by level."""
    if db is None:
        return {}
    return {lv: n for lv, n in db.counts_by("level", Query(since=since, kind="threat"), top=len(LEVELS))}


def counters(ctx: Ctx, db, since: float | None, label: str, now: float) -> None:
    per_min, per_min_src = _per_minute(ctx, db, now)
    levels = threat_counts(db, since)
    cols = st.columns(7)
    cols[0].metric("Conn / min", "?" if per_min is None else f"{per_min:.0f}",
                   help=f"connections per minute, from the {per_min_src}", border=True)
    for col, lv in zip(cols[1:4], ("CRITICAL", "HIGH", "MEDIUM")):
        help_ = (f"{lv} threats recorded, {label}" if lv in THREAT_LEVELS else
                 f"{lv} verdicts are logged, not threats: the analyzer saw "
                 f"{ctx.snap.analyzer_status.get('counts', {}).get(lv, '?')} since it started")
        value = levels.get(lv, 0) if lv in THREAT_LEVELS else _status_count(ctx, lv)
        col.metric(lv.title(), value, help=help_, border=True)
    pending = ctx.snap.pending
    crit = sum(1 for t in pending if t.get("level") == "CRITICAL")
    cols[4].metric("Pending", len(pending), help=f"threats waiting for review, {crit} of them CRITICAL",
                   border=True)
    cols[5].metric("Bans", len(ctx.snap.bans), help="active bans", border=True)
    drops = _drops(ctx)
    cols[6].metric("Dropped", compact(drops), help=f"{drops:,} packets dropped by the XDP ban filter",
                   border=True)


def _status_count(ctx: Ctx, level: str) -> int | str:
    counts = ctx.snap.analyzer_status.get("counts")
    n = counts.get(level) if isinstance(counts, dict) else None
    return n if isinstance(n, int) else "?"


def _bars(rows: list[tuple], bucket: int, title: str, key: str) -> None:
    df = times(pd.DataFrame(rows, columns=["bucket", "level", "events"]), "bucket")
    chart = (alt.Chart(df).mark_bar()
             .encode(x=alt.X("bucket:T", title=f"time (UTC, per {bucket // 60 or 1} min)",
                             scale=alt.Scale(type="utc")),
                     y=alt.Y("events:Q", title=title, stack=True),
                     color=alt.Color("level:N", sort=list(LEVELS),
                                     scale=alt.Scale(domain=list(LEVELS),
                                                     range=[LEVEL_COLORS[lv] for lv in LEVELS])),
                     order=alt.Order("level_rank:Q"),
                     tooltip=["bucket:T", "level:N", "events:Q"])
             .transform_calculate(level_rank=f"indexof({list(LEVELS)!r}, datum.level)")
             .properties(height=220))
    st.altair_chart(chart, width="stretch", key=key)


def timelines(db, since: float | None, label: str) -> None:
    bucket = bucket_of(label)
    by_kind = db.timelines_by_kind(Query(since=since), bucket)
    conns, flows = by_kind.get("connection", []), by_kind.get("flow", [])
    if not conns and not flows:
        st.info(f"No events recorded {label}.")
        return
    left, right = st.columns(2)
    with left:
        st.subheader("Outbound connections")
        if conns:
            _bars(conns, bucket, "connections", "tl_connections")
    with right:
        st.subheader("Inbound floods and flows")
        if flows:
            _bars(flows, bucket, "flow verdicts", "tl_flows")
        else:
            st.caption(f"No inbound flow verdicts {label}.")


def _top(rows: list[tuple], names: list[str]) -> pd.DataFrame:
    return times(pd.DataFrame(rows, columns=[*names, "events", "worst", "last"]), "last")


def tops(db, since: float | None) -> None:
    q = Query(since=since, kind="connection")
    left, right = st.columns(2)
    with left:
        st.subheader("Top destinations")
        st.dataframe(_top(db.top(("daddr", "dport"), q, TOP_N, TOP_LATEST), ["destination", "port"]),
                     hide_index=True, key="top_destinations", column_config=TOP_COLUMNS)
    with right:
        st.subheader("Top processes")
        st.dataframe(_top(db.top(("comm", "exe"), q, TOP_N, TOP_LATEST), ["process", "exe"]),
                     hide_index=True, key="top_processes", column_config=TOP_COLUMNS)


def render(ctx: Ctx) -> None:
    st.header("Overview")
    now = time.time()
    down = [live.text for live in (liveness("loader", ctx.snap.loader_status, now),
                                   liveness("analyzer", ctx.snap.analyzer_status, now))
            if not live.running]
    if down:
        st.info(md(" · ".join(down)) + ". Start both with `sudo make run`; what is shown here is "
                "what they last wrote.")
    label, since = pick_range("overview_range", where=st.columns(4)[0])
    with opened(ctx) as (db, where):
        counters(ctx, db, since, label, now)
        if db is None:
            st.info(md(where) + ": the analyzer creates it when it starts.")
            return
        st.caption(f"{label} · {where} · top lists over the newest {TOP_LATEST:,} connections of the range")
        timelines(db, since, label)
        tops(db, since)
