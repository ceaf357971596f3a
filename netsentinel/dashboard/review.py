"""Review: pending HIGH/CRITICAL threats, each with its evidence; Approve
writes a ban command (checked like the loader checks it), Reject may trust
the destination instead. Nothing is ever decided on a timeout."""

from __future__ import annotations

import streamlit as st

from .. import threats
from ..levels import rank
from .contain import contain_inputs, contain_threat
from .context import Ctx
from .data import ago
from .ui import (LEVEL_ICONS, PERMANENT_CONFIRM, act, check_permanent, code, loader_hint, md,
                 ttl_seconds, ttl_select)

RECENT_DECIDED = 20


def target_of(t: dict) -> str:
    return threats.target_of(t) or "?"


def _approve(ctx: Ctx, tid: str) -> None:
    def do() -> str:
        check_permanent(f"ttl_{tid}", f"perm_{tid}")
        wl = ctx.whitelist_for_write()
        t = threats.approve(ctx.store, tid, by="dashboard", note=st.session_state.get(f"note_{tid}"),
                            ttl_seconds=ttl_seconds(f"ttl_{tid}"), whitelist=wl,
                            protected=ctx.protected(wl))
        return f"Approved: ban of {t['ban_command']['ip']} queued; {loader_hint(ctx)}"
    act(do, refused="Ban refused: {}. The threat stays pending: reject it, or ban by hand.",
        audit=(ctx, "approve", {"threat": tid, "ttl_seconds": ttl_seconds(f"ttl_{tid}")}))


def _reject(ctx: Ctx, tid: str) -> None:
    trust = st.session_state.get(f"trust_{tid}", False)

    def do() -> str:
        t = threats.reject(ctx.store, tid, by="dashboard", note=st.session_state.get(f"note_{tid}"),
                           whitelist_file=ctx.whitelist_file if trust else None)
        extra = f"; {t['whitelisted']} is now trusted" if t.get("whitelisted") else ""
        return f"Rejected threat against {target_of(t)}{extra}."
    act(do, audit=(ctx, "reject", {"threat": tid, "trust_destination": bool(trust)}))


def evidence(t: dict) -> None:
    """Every field here came from the watched process or a model: st.code
    and st.text only (plain text, never linked)."""
    ev = t.get("event") if isinstance(t.get("event"), dict) else {}

    def g(key: str) -> object:
        return ev.get(key) if ev.get(key) is not None else "?"

    rules = ", ".join(map(str, t.get("rule_ids") or [])) or "-"
    st.code(f"process       {g('comm')}  pid {g('pid')} (parent {g('ppid')}, uid {g('uid')})\n"
            f"executable    {g('exe')}\n"
            f"command line  {g('cmdline')}\n"
            f"connection    {g('saddr')} -> {g('daddr')}:{g('dport')} ({g('family')})\n"
            f"seen          {t.get('count', 1)}x, first {ago(t.get('created_at'))}, "
            f"last {ago(t.get('last_seen'))}\n"
            f"verdict by    {t.get('verdict_source', '?')} ({t.get('backend', '?')}), "
            f"confidence {t.get('confidence', '?')}, rules {rules}",
            language=None, wrap_lines=True)
    with st.expander("Raw threat record"):
        st.json(t, expanded=False)


def threat_card(ctx: Ctx, t: dict) -> None:
    tid = str(t.get("id"))
    level = t.get("level", "?")
    with st.container(border=True):
        # anchor=False: a heading's anchor link would carry the category's text.
        st.subheader(f"{LEVEL_ICONS.get(level, '')} {md(level)} · {md(t.get('category', '?'))} → "
                     f"{code(target_of(t))}", anchor=False)
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
            contain_first = threats.default_action(t) == "contain"   # a local process is the actor
            if threats.local_actor(t):
                contain_inputs(t)
            b0, b1, b2, _ = st.columns([1, 1, 1, 3])
            if threats.local_actor(t):
                b0.form_submit_button("Contain process", type="primary" if contain_first else "secondary",
                                      key=f"contain_{tid}", on_click=contain_threat, args=(ctx, tid))
            with b1:
                st.form_submit_button("Approve (ban)", type="secondary" if contain_first else "primary",
                                      key=f"approve_{tid}", on_click=_approve, args=(ctx, tid))
            with b2:
                st.form_submit_button("Reject", key=f"reject_{tid}", on_click=_reject,
                                      args=(ctx, tid))


def decided(ctx: Ctx) -> None:
    done = [t for t in ctx.snap.threats if t.get("status") in ("approved", "rejected")]
    done.sort(key=lambda t: t.get("decided_at") or "", reverse=True)
    with st.expander(f"Recently decided ({min(len(done), RECENT_DECIDED)} of {len(done)})"):
        rows = [{"decided": t.get("decided_at"), "status": t.get("status"), "by": t.get("decided_by"),
                 "level": t.get("level"), "target": target_of(t), "category": t.get("category"),
                 "note": t.get("note"), "whitelisted": t.get("whitelisted"),
                 "ban ttl": (t.get("ban_command") or {}).get("ttl_seconds")}
                for t in done[:RECENT_DECIDED]]
        st.dataframe(rows, hide_index=True, key="decided_table")


def render(ctx: Ctx) -> None:
    st.header("Review")
    # CRITICAL first; within a level, the most recently seen first.
    pending = sorted(ctx.snap.pending, key=lambda t: str(t.get("last_seen") or ""), reverse=True)
    pending.sort(key=lambda t: rank(t.get("level")), reverse=True)
    if not pending:
        st.success("Nothing waits for a decision.")
    else:
        st.caption(f"{len(pending)} pending. Approve writes a ban command to ban_commands.json "
                   "(the loader applies it); Reject records the decision.")
    for t in pending:
        threat_card(ctx, t)
    decided(ctx)
