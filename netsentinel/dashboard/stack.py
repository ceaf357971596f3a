"""Stack: what the kernel dropped and why, and TCP health per connection
(records/stack.json, written by the loader with --stack; docs/STACK.md)."""

from __future__ import annotations

import altair as alt
import pandas as pd
import streamlit as st

from .. import records
from .context import Ctx
from .data import read_json

SORTS = {"retransmits": "retransmits", "smoothed RTT": "srtt_ms", "resets received": "rst_recv",
         "last seen": "last_seen"}
TCP_COLUMNS = ["process", "pid", "direction", "local", "remote", "state", "srtt_ms", "cwnd",
               "retransmits", "rst_sent", "rst_recv", "segments_in", "closed", "last_seen"]


def _doc(ctx: Ctx) -> dict:
    doc, notice = read_json(ctx.store, records.STACK, {})
    if notice:
        ctx.snap.notices[records.STACK] = notice
    return doc if isinstance(doc, dict) else {}


def _rows(value, required: tuple[str, ...]) -> list[dict]:
    """Rows that are dicts with the fields a table needs; anything else is
    left out (the file is the loader's, but a page must not die on it)."""
    return [r for r in value if isinstance(r, dict) and all(k in r for k in required)] \
        if isinstance(value, list) else []


def reasons_over_time(history: list[dict]) -> None:
    st.subheader("Drop reasons over time")
    rows = [{"time": h["ts"], "reason": str(reason), "drops": n}
            for h in history if isinstance(h.get("reasons"), dict)
            for reason, n in h["reasons"].items() if isinstance(n, int)]
    if not rows:
        st.info("No drops recorded yet.")
        return
    df = pd.DataFrame(rows)
    df["time"] = pd.to_datetime(df["time"], utc=True, errors="coerce")
    df = df.dropna(subset=["time"])
    chart = (alt.Chart(df).mark_bar()
             .encode(x=alt.X("time:T", title="interval end (UTC)", axis=alt.Axis(format="%H:%M:%S"),
                             scale=alt.Scale(type="utc")),
                     y=alt.Y("drops:Q", stack=True), color=alt.Color("reason:N"),
                     tooltip=["time:T", "reason:N", "drops:Q"])
             .properties(height=260))
    st.altair_chart(chart, width="stretch")
    totals = df.groupby("reason")["drops"].sum().sort_values(ascending=False).reset_index()
    st.dataframe(totals, hide_index=True, key="stack_reason_totals")


def top_sites(sites: list[dict]) -> None:
    st.subheader("Top dropping locations")
    if not sites:
        st.info("No drop locations recorded yet.")
        return
    df = pd.DataFrame(sites)[["count", "reason", "location", "ifname", "xdp"]]
    df["ifname"] = df["ifname"].fillna("(another namespace)")
    st.dataframe(df, hide_index=True, key="stack_sites",
                 column_config={"xdp": st.column_config.CheckboxColumn("XDP verdict")})


def tcp_table(conns: list[dict]) -> None:
    st.subheader("TCP health")
    if not conns:
        st.info("No TCP connections reported yet.")
        return
    by = st.selectbox("Sort by", list(SORTS), key="stack_tcp_sort")
    df = pd.DataFrame([{
        "process": c.get("comm") or "(inbound)", "pid": c.get("pid"), "direction": c.get("direction"),
        "local": f"{c['saddr']}:{c['sport']}", "remote": f"{c['daddr']}:{c['dport']}",
        "state": c.get("state"), "srtt_ms": c.get("srtt_ms"), "cwnd": c.get("cwnd"),
        "retransmits": c.get("retransmits"), "rst_sent": c.get("rst_sent"), "rst_recv": c.get("rst_recv"),
        "segments_in": c.get("segments_in"), "closed": bool(c.get("final")),
        "last_seen": c.get("last_seen")} for c in conns])
    df["last_seen"] = pd.to_datetime(df["last_seen"], utc=True, errors="coerce")
    df = df.sort_values(SORTS[by], ascending=False, na_position="last")
    st.dataframe(df[TCP_COLUMNS], hide_index=True, key="stack_tcp",
                 column_config={"last_seen": st.column_config.DatetimeColumn("last seen (UTC)",
                                                                             format="HH:mm:ss"),
                                "pid": st.column_config.NumberColumn(format="%d")})


def render(ctx: Ctx) -> None:
    st.header("Stack")
    doc = _doc(ctx)
    if not doc:
        st.info("No stack data yet: the loader writes stack.json while it runs with --stack "
                "(the default). Start it with `sudo make run`.")
        return
    for why in (doc.get("detail_off_reason"), doc.get("tcp_off_reason")):
        if isinstance(why, str):
            st.warning(why)
    totals = doc.get("totals") if isinstance(doc.get("totals"), dict) else {}
    cols = st.columns(3)
    cols[0].metric("Kernel drops", totals.get("drops", 0), border=True,
                   help="packets the kernel dropped since the loader started (XDP drops of ours once)")
    cols[1].metric("Intervals with drops", totals.get("intervals", 0), border=True)
    cols[2].metric("TCP reports", totals.get("tcp_reported", 0), border=True)
    st.caption(f"updated {doc.get('updated_at', '-')} · every {doc.get('interval_s', '-')} s")
    reasons_over_time(_rows(doc.get("history"), ("ts", "reasons")))
    top_sites(_rows(doc.get("sites"), ("count", "reason", "location", "ifname", "xdp")))
    tcp_table(_rows(doc.get("connections"), ("saddr", "sport", "daddr", "dport")))
