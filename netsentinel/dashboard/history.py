"""History: the event store (docs/EVENTSTORE.md) searched by time range and
filters, a timeline drawn from an aggregate query, one page of rows at a
time, export, and an investigation summary when the filters follow one
process, executable or address. Every figure comes from a query: the page
never loads the whole history."""

from __future__ import annotations

import csv
import io
import json
import time

import pandas as pd
import streamlit as st

from .. import records
from ..eventstore import Query
from ..eventstore.rows import stored_record
from ..levels import LEVELS
from ..stackfacts import stack_facts
from .context import Ctx
from .data import read_json
from .ui import md
from .storeview import RANGES, bucket_of, opened, times
PAGE_ROWS = 100
SHOWN = ["time", "kind", "level", "comm", "pid", "uid", "exe", "saddr", "daddr", "dport", "category",
         "reason"]


def _query(f: dict, page: int, limit: int = PAGE_ROWS) -> Query:
    span = RANGES[f["range"]]
    level, at_least = (f["level"].rstrip("+"), f["level"].endswith("+")) if f["level"] else (None, False)
    port = int(f["port"]) if f["port"].strip().isdigit() else None
    follow = f["follow"].strip() or None
    return Query(since=time.time() - span if span else None, kind=f["kind"] or None,
                 process=follow if f["what"] == "process" else None,
                 exe=follow if f["what"] == "exe" else None,
                 addr=follow if f["what"] == "address" else None,
                 port=port, level=level, min_level=at_least, category=f["category"].strip() or None,
                 text=f["text"].strip() or None, limit=limit, page=page)


def _filters() -> dict:
    c = st.columns([2, 2, 3, 1, 2])
    f = {"range": c[0].selectbox("Range", list(RANGES), index=2, key="hist_range"),
         "what": c[1].selectbox("Follow", ["process", "exe", "address"], key="hist_what"),
         "follow": c[2].text_input("Name, path or address", key="hist_follow",
                                   placeholder="curl, /usr/bin/nc, 203.0.113.9"),
         "port": c[3].text_input("Port", key="hist_port"),
         "level": c[4].selectbox("Level", [""] + [f"{lv}+" for lv in LEVELS[1:]] + list(LEVELS),
                                 key="hist_level", format_func=lambda v: v or "any")}
    c = st.columns([2, 2, 5])
    f["kind"] = c[0].selectbox("Kind", ["", "connection", "flow", "threat", "decision"],
                               key="hist_kind", format_func=lambda v: v or "any")
    f["category"] = c[1].text_input("Category", key="hist_category")
    f["text"] = c[2].text_input("Text", key="hist_text", placeholder="reason, command line, ...")
    return f


def _frame(rows: list[dict]) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=["id", *SHOWN]) if rows else pd.DataFrame(columns=["id", *SHOWN])
    return df[SHOWN]


def _export(db, q: Query) -> tuple[bytes, bytes]:
    rows = db.search(Query(**{**q.__dict__, "limit": 10_000, "page": 1}))
    out = io.StringIO()
    w = csv.writer(out)
    w.writerow(SHOWN)
    w.writerows([[r.get(c) for c in SHOWN] for r in rows])
    jl = "".join(json.dumps({**{c: r.get(c) for c in SHOWN}, "record": stored_record(r)},
                            ensure_ascii=False) + "\n" for r in rows)
    return out.getvalue().encode(), jl.encode()


def _stack_of(ctx: Ctx, f: dict) -> dict | None:
    """What the loader's stack.json holds of the followed process or address."""
    doc, _ = read_json(ctx.store, records.STACK, {})
    follow = f["follow"].strip()
    return stack_facts(doc, process=follow if f["what"] == "process" else None,
                       exe=follow if f["what"] == "exe" else None,
                       addr=follow if f["what"] == "address" else None)


def _summary(s: dict, stack: dict | None = None) -> None:
    if s["rows"]:
        cols = st.columns(4)
        for col, key, title in zip(cols, ("by_kind", "by_level", "by_daddr", "by_dport"),
                                   ("kinds", "levels", "destinations", "ports")):
            col.caption(title)
            col.dataframe(pd.DataFrame(s[key], columns=[title, "events"]), hide_index=True)
    if not stack or not (stack["connections"] or stack["drops"] or stack["paths"]):
        return
    st.caption(f"In the stack (the running loader's stack.json, since {stack['since'] or 'its start'}): "
               "TCP health, dropped packets and packet paths")
    conns = pd.DataFrame([{
        "process": c.get("comm"), "pid": c.get("pid"), "direction": c.get("direction"),
        "local": f"{c['saddr']}:{c['sport']}", "remote": f"{c['daddr']}:{c['dport']}", "state": c.get("state"),
        "srtt_ms": c.get("srtt_ms"), "retransmits": c.get("retransmits"), "rst_sent": c.get("rst_sent"),
        "rst_recv": c.get("rst_recv")} for c in stack["connections"]])
    st.dataframe(conns, hide_index=True, key="hist_stack_tcp")
    c1, c2 = st.columns(2)
    c1.dataframe(pd.DataFrame(stack["drops"], columns=["count", "reason", "src", "dst", "dport"])
                 .rename(columns={"reason": "drop reason"}),
                 hide_index=True, key="hist_stack_drops")
    c2.dataframe(pd.DataFrame([{"flow": f"{p['src']}:{p['sport']} → {p['dst']}:{p['dport']}",
                                "packets": p.get("packets"), "reached": ", ".join(p.get("nodes") or {})}
                               for p in stack["paths"]]), hide_index=True, key="hist_stack_paths")


def render(ctx: Ctx) -> None:
    st.header("History")
    with opened(ctx) as (db, where):
        if db is None:
            st.info(md(where) + ": the analyzer creates it when it starts.")
            return
        f = _filters()
        page = int(st.number_input("Page", min_value=1, value=1, step=1, key="hist_page"))
        try:
            q = _query(f, page)
        except ValueError as e:
            st.warning(str(e))
            return
        total = db.count(q)
        st.caption(f"{total} events, page {page} of {max(1, -(-total // PAGE_ROWS))} "
                   f"(newest first; {where})")
        tl = db.timeline(q, bucket_of(f["range"]))
        if tl:
            chart = times(pd.DataFrame(tl, columns=["t", "level", "n"]), "t")
            st.bar_chart(chart.pivot_table(index="t", columns="level", values="n", fill_value=0))
        if f["follow"].strip():
            _summary(db.investigate(q), _stack_of(ctx, f))
        st.dataframe(_frame(db.search(q)), hide_index=True, key="hist_table",
                     column_config={"reason": st.column_config.TextColumn(width="large"),
                                    "dport": st.column_config.NumberColumn(format="%d")})
        if total and st.toggle("Prepare export (up to 10,000 rows)", key="hist_export"):
            csv_bytes, jl_bytes = _export(db, q)
            c1, c2 = st.columns(2)
            c1.download_button("CSV", csv_bytes, "netsentinel-events.csv", "text/csv")
            c2.download_button("JSON lines", jl_bytes, "netsentinel-events.jsonl",
                               "application/jsonl")
