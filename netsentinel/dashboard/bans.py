"""Bans: ban an address or network (checked first, like the loader checks
it), unban, and see what is active, queued and refused."""

from __future__ import annotations

import time

import streamlit as st

from ..bancheck import validate
from ..errors import InputError
from .context import Ctx
from .data import ago
from ..liveness import expires
from .ui import PERMANENT_CONFIRM, act, check_permanent, loader_hint, ttl_seconds, ttl_select


def _ban(ctx: Ctx) -> None:
    target = (st.session_state.get("ban_ip") or "").strip()

    def do() -> str:
        if not target:
            raise InputError("Enter an IPv4/IPv6 address or a CIDR such as 198.51.100.0/24.")
        check_permanent("ban_ttl", "ban_permanent_ok")
        cmd = {"action": "ban", "ip": target,
               "reason": (st.session_state.get("ban_reason") or "").strip() or "banned from the dashboard",
               "source": "dashboard"}
        ttl = ttl_seconds("ban_ttl")
        if ttl:
            cmd["ttl_seconds"] = ttl
        wl = ctx.whitelist_for_write()
        cmd["ip"] = validate(cmd, wl, ctx.protected(wl)).key
        ctx.store.append_command(cmd)
        return f"Ban of {cmd['ip']} queued; {loader_hint(ctx)}"

    details = {"ip": target, "reason": st.session_state.get("ban_reason") or "",
               "ttl_seconds": ttl_seconds("ban_ttl")}
    if act(do, refused="Ban refused: {}", audit=(ctx, "ban", details)):
        st.session_state["ban_ip"] = ""
        st.session_state["ban_reason"] = ""
        st.session_state["ban_permanent_ok"] = False


def _unban(ctx: Ctx) -> None:
    target = st.session_state.get("unban_ip")

    def do() -> str:
        if not target:
            raise InputError("Pick a ban to lift.")
        ctx.store.append_command({"action": "unban", "ip": target, "source": "dashboard"})
        return f"Unban of {target} queued; {loader_hint(ctx)}"

    act(do, audit=(ctx, "unban", {"ip": target}))


def ban_form(ctx: Ctx) -> None:
    with st.form("ban_form"):
        st.subheader("Ban an address or network")
        c1, c2, c3 = st.columns([2, 3, 1])
        c1.text_input("IP or CIDR", key="ban_ip", placeholder="203.0.113.7 or 198.51.100.0/24")
        c2.text_input("Reason", key="ban_reason", placeholder="why (kept with the ban)")
        with c3:
            ttl_select("ban_ttl")
            st.checkbox(PERMANENT_CONFIRM, key="ban_permanent_ok", help="needed when the ban is permanent")
        st.form_submit_button("Ban", type="primary", key="ban_submit", on_click=_ban, args=(ctx,))


def active(ctx: Ctx, now: float) -> None:
    bans = ctx.snap.bans
    unbans = {c.get("ip") for c in ctx.snap.queued_commands if c.get("action") == "unban"}
    st.subheader(f"Active bans ({len(bans)})")
    if not bans:
        st.caption("No active bans (records/banned_ips.json is written by the loader).")
        return
    rows = []
    for ip, b in sorted(bans.items(), key=lambda kv: str(kv[1].get("banned_at") or ""), reverse=True):
        rows.append({"ban": ip, "reason": b.get("reason"), "source": b.get("source"),
                     "age": ago(b.get("banned_at"), now), "expires": expires(b.get("expires_at"), now, "expired"),
                     "drops": b.get("drops", 0), "last drop": ago(b.get("last_drop_at"), now),
                     "unban queued": ip in unbans})
    st.dataframe(rows, hide_index=True, key="bans_table",
                 column_config={"drops": st.column_config.NumberColumn(format="%d")})
    c1, c2 = st.columns([3, 1], vertical_alignment="bottom")
    c1.selectbox("Lift a ban", sorted(bans), index=None, key="unban_ip", placeholder="pick a ban")
    c2.button("Unban", key="unban_submit", on_click=_unban, args=(ctx,))


def queued(ctx: Ctx, now: float) -> None:
    cmds = ctx.snap.queued_commands
    st.subheader(f"Queued, not yet applied ({len(cmds)})")
    if cmds:
        st.dataframe([{"action": c.get("action"), "target": c.get("ip"), "reason": c.get("reason"),
                       "ttl s": c.get("ttl_seconds"), "source": c.get("source"),
                       "queued": ago(c.get("requested_at"), now)} for c in cmds],
                     hide_index=True, key="queued_table")
        st.caption(f"Each is applied in order: {loader_hint(ctx)}")
    else:
        st.caption("Nothing waiting in ban_commands.json.")


def refused(ctx: Ctx, now: float) -> None:
    rej = list(reversed(ctx.snap.rejected_commands))
    with st.expander(f"Refused commands ({len(rej)})", expanded=False):
        rows = []
        for r in rej:
            cmd = r.get("command") if isinstance(r.get("command"), dict) else {"ip": r.get("command")}
            rows.append({"when": ago(r.get("rejected_at"), now), "action": cmd.get("action"),
                         "target": cmd.get("ip"), "why": r.get("error"), "by": r.get("by")})
        st.dataframe(rows, hide_index=True, key="refused_table")


def render(ctx: Ctx) -> None:
    st.header("Bans")
    now = time.time()
    ban_form(ctx)
    active(ctx, now)
    queued(ctx, now)
    refused(ctx, now)
