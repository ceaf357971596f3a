"""Review: pending threats as one sortable, filterable table with
multi-select approve/reject, and one card (evidence + its own form) opened
on demand. Approve writes a ban command (checked like the loader checks
it), Reject may trust the destination instead. Nothing is ever decided on
a timeout. The actions themselves are in reviewactions.ACTIONS."""

from __future__ import annotations

import hashlib

import streamlit as st

from .. import threats
from ..errors import NetSentinelError
from ..levels import rank
from .contain import STOP_CHOICES, contain_inputs
from .context import Ctx
from .data import ago
from .reviewactions import ACTIONS, Options, audit_details
from .ui import (LEVEL_ICONS, PERMANENT_CONFIRM, act, analyzer_hint, check_permanent, code, flash,
                 md, needs_confirmation, ttl_seconds, ttl_select)

RECENT_DECIDED = 20
TABLE_KEY = "review_table"
# The table's columns, in order; every value is plain text in a data grid
# (never markdown, never a link).
COLUMNS = ("level", "category", "target", "process", "count", "last seen", "confidence",
           "verdict by", "id")


def target_of(t: dict) -> str:
    if t.get("aggregate"):  # many targets folded into one: its event's is only the latest
        return f"(many: {t.get('count', '?')} sightings)"
    return threats.target_of(t) or "?"


def subject_of(t: dict) -> str:
    """What a threat is about, in one line (card heading, table rows): its
    address, or for a process's threat with no single destination (a raw
    socket, a raw or UDP fan-out) the process and its fan-out."""
    ev = t.get("event") if isinstance(t.get("event"), dict) else {}
    addr = threats.target_of({**t, "event": ev})   # a hand-edited record may hold anything
    kind = ev.get("type")
    if addr or kind not in ("udp", "egress", "raw_socket"):
        return addr or "?"
    who = f"{ev.get('comm') or '?'} (pid {ev.get('pid', '?')}, uid {ev.get('uid', '?')})"
    if kind == "udp":
        return (f"{who}: UDP to {ev.get('hosts', '?')} host(s), {ev.get('busiest_host_ports', '?')} "
                f"port(s) on {ev.get('busiest_host') or '?'}")
    if kind == "egress":
        targets = ev.get("targets") if isinstance(ev.get("targets"), list) else []
        top = targets[0] if targets and isinstance(targets[0], dict) else {}
        ports = sum(n for n in (top.get("tcp_port_count"), top.get("udp_port_count")) if isinstance(n, int))
        return (f"{who}: raw packets to {ev.get('hosts', '?')} host(s), {ports} port(s) on "
                f"{top.get('daddr') or '?'}")
    return f"{who}: {ev.get('family', '?')} {ev.get('sock_type', '?')} socket ({ev.get('protocol_name', '?')})"


def _row(t: dict) -> dict:
    ev = t.get("event") if isinstance(t.get("event"), dict) else {}
    return {"level": str(t.get("level", "?")), "category": str(t.get("category", "?")),
            "target": subject_of(t), "process": str(ev.get("exe") or ev.get("comm") or ""),
            "count": t.get("count", 1), "last seen": str(t.get("last_seen") or ""),
            "confidence": t.get("confidence"), "verdict by": str(t.get("verdict_source", "?")),
            "id": str(t.get("id"))}


def ordered(pending: list[dict]) -> list[dict]:
    """CRITICAL first; within a level the oldest first, so a new threat
    joins the end of its level and a selection keeps pointing at the rows
    it was made on across refreshes."""
    out = sorted(pending, key=lambda t: (str(t.get("created_at") or ""), str(t.get("id"))))
    out.sort(key=lambda t: rank(t.get("level")), reverse=True)
    return out


def matches(row: dict, text: str, levels: list[str]) -> bool:
    if levels and row["level"] not in levels:
        return False
    text = text.strip().lower()
    return not text or any(text in str(v).lower() for v in row.values())


# ------------------------------------------------------------------ actions
def _options(prefix: str) -> Options:
    return Options(ttl_seconds=ttl_seconds(f"ttl_{prefix}"),
                   note=st.session_state.get(f"note_{prefix}") or None,
                   trust=bool(st.session_state.get(f"trust_{prefix}", False)),
                   stop=STOP_CHOICES.get(st.session_state.get(f"stop_{prefix}", "no")),
                   by_exe=not st.session_state.get(f"proconly_{prefix}", False))


def _one(ctx: Ctx, name: str, tid: str) -> None:
    """A card's button: one threat."""
    action = ACTIONS[name]
    opt = _options(tid)

    def do() -> str:
        if name == "approve":
            check_permanent(f"ttl_{tid}", f"perm_{tid}")
        if name == "contain" and opt.stop:
            needs_confirmation(f"stopok_{tid}", f"Stopping the process with SIG{opt.stop}")
        return action.run(ctx, tid, opt)
    act(do, refused=action.refused, audit=(ctx, name, audit_details(name, tid, opt)))


def _bulk(ctx: Ctx, name: str, ids: tuple[str, ...]) -> None:
    """The table's buttons: every selected threat, each on its own (one
    refusal does not stop the rest), then one summary line."""
    label, fn = ACTIONS[name].label, ACTIONS[name].run
    if not ids:
        flash("error", "Select threats in the table first (the boxes at the left of each row).")
        return
    opt = _options("bulk")
    if name == "approve" and opt.ttl_seconds is None and not st.session_state.get("perm_bulk"):
        flash("error", "A permanent ban needs confirmation: tick the confirmation box and submit again.")
        return
    done, refused = [], []
    asked: dict[str, str] = {}  # command id -> threat id (unprivileged: the analyzer decides)
    ctx.deferred = [] if ctx.queued else None
    for tid in ids:
        ctx.asked = False
        try:
            message, outcome = fn(ctx, tid, opt), "ok"
        except NetSentinelError as e:
            message, outcome = None, f"refused: {e}"
            refused.append(f"{tid}: {e}")
        if ctx.asked:  # queued: answered (and audited by the analyzer) below
            asked[ctx.deferred[-1]] = tid
            continue
        if message is not None:
            done.append(message)
        try:
            ctx.audit(name, audit_details(name, tid, opt), outcome)
        except NetSentinelError as e:
            refused.append(f"not recorded in the audit trail: {e}")
    ctx.deferred = None
    for cid, answer in ctx.answers(list(asked)).items() if asked else ():
        if answer == "ok":
            done.append(f"{asked[cid]}: done by the analyzer.")
        elif answer is None:
            done.append(f"{asked[cid]}: {analyzer_hint(ctx, False)}.")
        else:
            refused.append(f"{asked[cid]}: {answer.removeprefix('refused: ')}")
    verb = label.split()[0].lower()
    if done:
        flash("success", f"{verb}: {len(done)} of {len(ids)} done. " + " ".join(done[:5])
              + (" ..." if len(done) > 5 else ""))
    if refused:
        flash("error", f"{verb}: {len(refused)} refused. " + " | ".join(refused[:5])
              + (" ..." if len(refused) > 5 else ""))


# --------------------------------------------------------------------- cards
SIGHTING_COLUMNS = ("ts", "level", "category", "comm", "pid", "uid", "daddr", "dport", "reason", "exe")


def evidence(t: dict) -> None:
    """Every field here came from the watched process or a model: st.code
    and st.text only (plain text, never linked)."""
    ev = t.get("event") if isinstance(t.get("event"), dict) else {}

    def g(key: str) -> object:
        return ev.get(key) if ev.get(key) is not None else "?"

    rules = ", ".join(map(str, t.get("rule_ids") or [])) or "-"
    sample = t.get("targets_sample") or []
    st.code(f"process       {g('comm')}  pid {g('pid')} (parent {g('ppid')}, uid {g('uid')})\n"
            f"executable    {g('exe')}\n"
            f"command line  {g('cmdline')}\n"
            + (f"connection    {g('saddr')} -> {g('daddr')}:{g('dport')} ({g('family')})\n"
               if ev.get("daddr") is not None else f"sent          {subject_of(t)}\n")
            + f"seen          {t.get('count', 1)}x, first {ago(t.get('created_at'))}, "
            f"last {ago(t.get('last_seen'))}\n"
            f"verdict by    {t.get('verdict_source', '?')} ({t.get('backend', '?')}), "
            f"confidence {t.get('confidence', '?')}, rules {rules}"
            + (f"\ntargets e.g.  {', '.join(map(str, sample))}" if sample else ""),
            language=None, wrap_lines=True)
    sightings = [x for x in t.get("sightings") or [] if isinstance(x, dict)]
    if len(sightings) > 1:  # each row one sighting, whole: its time, reason, process and target
        st.caption(f"The last {len(sightings)} sightings")
        st.dataframe([{k: ("" if x.get(k) is None else str(x.get(k))) for k in SIGHTING_COLUMNS}
                      for x in reversed(sightings)], hide_index=True, key=f"sightings_{t.get('id')}")
    with st.expander("Raw threat record"):
        st.json(t, expanded=False)


def threat_card(ctx: Ctx, t: dict) -> None:
    tid = str(t.get("id"))
    level = t.get("level", "?")
    with st.container(border=True):
        # anchor=False: a heading's anchor link would carry the category's text.
        st.subheader(f"{LEVEL_ICONS.get(level, '')} {md(level)} · {md(t.get('category', '?'))} → "
                     f"{code(subject_of(t))}", anchor=False)
        st.markdown("**Why**")
        st.text(str(t.get("reason") or "-"))
        st.markdown("**Recommended**")
        st.text(str(t.get("recommended_action") or "-"))
        if t.get("note"):
            st.text(f"note: {t['note']}")
        evidence(t)
        with st.form(f"decide_{tid}", border=False):
            c1, c2, c3 = st.columns([1, 2, 2])
            with c1:
                ttl_select(f"ttl_{tid}", "Ban or containment expires after")
                st.checkbox(PERMANENT_CONFIRM, key=f"perm_{tid}",
                            help="needed when the ban is permanent")
            c2.text_input("Note (optional)", key=f"note_{tid}")
            c3.checkbox(f"On reject, also trust {code(target_of(t))}", key=f"trust_{tid}",
                        help="adds it to the whitelist in filter_config.json")
            contain_inputs(t)   # only for a local process
            primary = "contain" if threats.default_action(t) == "contain" else "approve"
            offered = [(name, a) for name, a in ACTIONS.items() if a.offered(t)]
            cols = st.columns([1] * len(offered) + [4])
            for col, (name, a) in zip(cols, offered):
                with col:
                    st.form_submit_button(a.label, type="primary" if name == primary else "secondary",
                                          key=f"{name}_{tid}", on_click=_one, args=(ctx, name, tid))


# --------------------------------------------------------------------- table
def table(ctx: Ctx, pending: list[dict]) -> list[dict]:
    """The filter, the table and the bulk form; the rows shown."""
    c1, c2 = st.columns([3, 2])
    text = c1.text_input("Filter", key="review_filter",
                         placeholder="any text: address, category, process, id")
    levels = c2.multiselect("Levels", sorted({str(t.get("level")) for t in pending},
                                             key=rank, reverse=True), key="review_levels")
    rows = [r for r in map(_row, pending) if matches(r, text, levels)]
    st.caption(f"{len(rows)} of {len(pending)} pending shown. Click a column to sort; tick rows to "
               "decide them together, or open one below.")
    # The selection is by row position: keyed on the rows shown, so when they
    # change (a decision, a new threat, a filter) the table and its ticks
    # start afresh instead of pointing at other threats.
    key = f"{TABLE_KEY}_{hashlib.sha1(' '.join(r['id'] for r in rows).encode()).hexdigest()[:12]}"
    event = st.dataframe(rows, hide_index=True, key=key, on_select="rerun",
                         selection_mode="multi-row", width="stretch",
                         column_order=COLUMNS)
    picked = [i for i in (event.selection.rows if event else []) if 0 <= i < len(rows)]
    ids = tuple(rows[i]["id"] for i in picked)
    with st.form("review_bulk", border=True):
        st.markdown(f"**{len(ids)} selected**" + (f": {md(', '.join(rows[i]['target'] for i in picked[:8]))}"
                                                  + (" ..." if len(picked) > 8 else "") if ids else ""))
        f1, f2, f3 = st.columns([1, 2, 2])
        with f1:
            ttl_select("ttl_bulk", "Bans expire after")
            st.checkbox(PERMANENT_CONFIRM, key="perm_bulk", help="needed when the bans are permanent")
        f2.text_input("Note (optional)", key="note_bulk")
        f3.checkbox("On reject, also trust each target", key="trust_bulk",
                    help="adds each to the whitelist in filter_config.json")
        bulk = [(name, a) for name, a in ACTIONS.items() if a.bulk]
        cols = st.columns([1] * len(bulk) + [4])
        for col, (name, a) in zip(cols, bulk):
            with col:
                st.form_submit_button(f"{a.label.split()[0]} selected", key=f"bulk_{name}",
                                      on_click=_bulk, args=(ctx, name, ids))
    by_id = {str(t.get("id")): t for t in pending}
    return [by_id[r["id"]] for r in rows]


def decided(ctx: Ctx) -> None:
    done = [t for t in ctx.snap.threats if t.get("status") in ("approved", "rejected")]
    done.sort(key=lambda t: t.get("decided_at") or "", reverse=True)
    with st.expander(f"Recently decided ({min(len(done), RECENT_DECIDED)} of {len(done)})"):
        rows = [{"decided": t.get("decided_at"), "status": t.get("status"), "by": t.get("decided_by"),
                 "level": t.get("level"), "target": subject_of(t), "category": t.get("category"),
                 "note": t.get("note"), "whitelisted": t.get("whitelisted"),
                 "ban ttl": (t.get("ban_command") or {}).get("ttl_seconds")}
                for t in done[:RECENT_DECIDED]]
        st.dataframe(rows, hide_index=True, key="decided_table")


def _label(t: dict) -> str:
    return f"{t.get('level', '?')} · {t.get('category', '?')} → {subject_of(t)} · {t.get('id')}"


def render(ctx: Ctx) -> None:
    st.header("Review")
    pending = ordered(ctx.snap.pending)
    if not pending:
        st.success("Nothing waits for a decision.")
        decided(ctx)
        return
    st.caption(f"{len(pending)} pending. Approve writes a ban command (the loader applies it); "
               "Reject records the decision.")
    shown = table(ctx, pending)
    # One card on demand: the one picked here (labels are plain text in a
    # select box), at first the most pressing: highest level, latest seen.
    by_id = {str(t.get("id")): t for t in shown}
    if not shown:
        return decided(ctx)
    if st.session_state.get("review_open") not in by_id:
        # Set, not dropped: the browser then shows the card it gets.
        st.session_state["review_open"] = str(max(shown, key=lambda t: (
            rank(t.get("level")), str(t.get("last_seen") or ""))).get("id"))
    tid = st.selectbox("Open a threat", list(by_id), key="review_open",
                       format_func=lambda i: _label(by_id[i]))
    if tid in by_id:
        threat_card(ctx, by_id[tid])
    decided(ctx)
