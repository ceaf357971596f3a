"""Audit: who approved, rejected, banned, unbanned, trusted, changed a
setting or signed in, and when (records/audit.jsonl, newest first)."""

from __future__ import annotations

import streamlit as st

from .. import audit
from ..store import StoreError
from .context import Ctx
from .ui import md

SHOWN = 1000


def render(ctx: Ctx) -> None:
    st.header("Audit")
    try:
        entries, bad = audit.read(ctx.store, SHOWN)
    except StoreError as e:
        st.error(md(e))
        return
    st.caption(f"The newest {len(entries)} entries of records/{audit.AUDIT} (every write made from "
               "the dashboard, with the session that made it; refused attempts too).")
    if bad:
        st.warning(f"{bad} line(s) of {audit.AUDIT} are not audit entries; they are skipped.")
    if not entries:
        st.info("Nothing recorded yet.")
        return
    c1, c2 = st.columns([2, 3])
    actions = sorted({str(e.get("action")) for e in entries})
    picked = c1.multiselect("Action", actions, key="audit_actions", placeholder="all")
    text = c2.text_input("Search", key="audit_search", placeholder="address, session, outcome ...")
    rows = [{"when (UTC)": e.get("ts"), "who": e.get("who"), "action": e.get("action"),
             "details": ", ".join(f"{k}={v}" for k, v in (e.get("details") or {}).items())
             if isinstance(e.get("details"), dict) else str(e.get("details")),
             "outcome": e.get("outcome")} for e in reversed(entries)]
    if picked:
        rows = [r for r in rows if r["action"] in picked]
    if text.strip():
        needle = text.strip().lower()
        rows = [r for r in rows if needle in " ".join(map(str, r.values())).lower()]
    # A table is drawn as text (never markdown): details are what people typed.
    st.dataframe(rows, hide_index=True, key="audit_table",
                 column_config={"details": st.column_config.TextColumn(width="large")})
