"""Filter rules: the XDP rules in force (with hits), LLM-proposed rules waiting
for a person, asking the LLM for rules against recent floods, adding a rule
by hand, and the rule commands queued or refused.

Every write is a command in records/rule_commands.json (the loader validates
and loads it); proposals are decided through netsentinel/proposals.py, so a
rule that failed validation can never be approved.
"""

from __future__ import annotations

import json
import time

import streamlit as st

from .. import proposals
from ..errors import InputError
from ..filterrules import RuleRefused, check_rule_policy, parse_rule
from ..llm.config import load_llm_config
from ..llm.propose import ask_for_rules, summary
from ..records import FILTER_RULES, RULE_COMMANDS, RULE_COMMANDS_REJECTED, RULE_PROPOSALS
from .context import Ctx
from .data import ago, read_json
from .storeview import opened
from .ui import act, analyzer_hint, code, loader_hint, md

RULE_COLUMNS = ("id", "action", "src", "proto", "sport", "dport", "tcp_flags", "icmp_type", "rate_pps")


def _file(ctx: Ctx, name: str, default):
    value, notice = read_json(ctx.store, name, default)
    if notice:
        ctx.snap.notices[name] = notice
    return value


def _queue(ctx: Ctx, command: dict) -> None:
    ctx.store.append_command({**command, "source": "dashboard"}, name=RULE_COMMANDS)


# ------------------------------------------------------------------ rules in force
def _remove(ctx: Ctx) -> None:
    rid = st.session_state.get("rule_remove_id")

    def do() -> str:
        if not rid:
            raise InputError("Pick a rule to remove.")
        _queue(ctx, {"action": "remove_rule", "id": rid})
        return f"Removal of rule {rid} queued; {loader_hint(ctx)}"
    act(do, audit=(ctx, "rule_remove", {"id": rid}))


def in_force(ctx: Ctx, now: float) -> None:
    rules = (_file(ctx, FILTER_RULES, {}) or {}).get("rules", [])
    rules = [r for r in rules if isinstance(r, dict)]
    st.subheader(f"Rules in force ({len(rules)})")
    if not rules:
        st.caption("No filter rules loaded (records/filter_rules.json is written by the loader).")
        return
    st.dataframe([{**{k: r.get(k) for k in RULE_COLUMNS}, "hits": r.get("hits", 0),
                   "source": r.get("source"), "added": ago(r.get("created_at"), now),
                   "expires": r.get("expires_at") or "never", "reason": r.get("reason")}
                  for r in rules], hide_index=True, key="rules_table")
    c1, c2 = st.columns([3, 1], vertical_alignment="bottom")
    c1.selectbox("Remove a rule", [r["id"] for r in rules if "id" in r], index=None,
                 key="rule_remove_id", placeholder="pick a rule")
    c2.button("Remove", key="rule_remove_submit", on_click=_remove, args=(ctx,))


# ------------------------------------------------------------------ proposals
def _decide(ctx: Ctx, pid: str, approve: bool) -> None:
    note = (st.session_state.get(f"prop_note_{pid}") or "").strip() or None

    def do() -> str:
        if ctx.queued:  # unprivileged: root's analyzer decides it (and audits it)
            applied = ctx.ask("proposal", proposal=pid, approve=approve, note=note)
            return f"Proposal {pid} {'approved' if approve else 'rejected'}: {analyzer_hint(ctx, applied)}."
        p = proposals.decide(ctx.store, pid, approve=approve, by="dashboard", note=note)
        if approve:
            return f"Approved: {len(p['applied'])} rule(s) queued for the loader; {loader_hint(ctx)}"
        return f"Proposal {pid} rejected."
    act(do, audit=(ctx, "rule_proposal_" + ("approve" if approve else "reject"),
                   {"proposal": pid, "note": note}))


def pending_proposals(ctx: Ctx, now: float) -> None:
    pending = proposals.list_proposals(_file(ctx, RULE_PROPOSALS, []), "pending")
    st.subheader(f"Proposed by the LLM, waiting for review ({len(pending)})")
    if not pending:
        st.caption("No proposals waiting. The analyzer asks for one on a CRITICAL flood when an LLM "
                   "is configured; you can also ask below.")
    for p in pending:
        pid = p.get("id", "?")
        trig = p.get("trigger") or {}
        with st.container(border=True):
            st.markdown(f"**{md(p.get('summary'))}**  \n"
                        f"by {md(p.get('backend'))}, {ago(p.get('created_at'), now)}; "
                        f"trigger: {md(trig.get('kind'))} {md(trig.get('category') or '')} "
                        f"{md(trig.get('src') or '')}")
            rows = [{**{k: (r.get("rule") or {}).get(k) for k in RULE_COLUMNS[1:]},
                     "reason": (r.get("rule") or {}).get("reason"),
                     "valid": bool(r.get("valid")), "refused because": r.get("error")}
                    for r in p.get("rules", []) if isinstance(r, dict)]
            st.dataframe(rows, hide_index=True, key=f"prop_rules_{pid}")
            valid = sum(r["valid"] for r in rows)
            st.text_input("Note (optional)", key=f"prop_note_{pid}")
            c1, c2 = st.columns(2)
            c1.button(f"Approve {valid} valid rule(s)", key=f"prop_approve_{pid}", type="primary",
                      disabled=valid == 0, on_click=_decide, args=(ctx, pid, True))
            c2.button("Reject", key=f"prop_reject_{pid}", on_click=_decide, args=(ctx, pid, False))


def flood_evidence(ctx: Ctx) -> list[dict]:
    with opened(ctx) as (db, _):
        return proposals.flood_evidence(db) if db is not None else []


def _ask(ctx: Ctx) -> None:
    def do() -> str:
        if ctx.queued:
            # Unprivileged: no API key here. Root's analyzer asks the model with
            # the settings in force; the proposal appears below when it answers.
            ctx.ask("propose")
            return ("Asked the analyzer to ask the model (it has root's settings and keys); the "
                    "proposal appears below when the model answers, or the Audit page says why not.")
        cfg, error = load_llm_config(ctx.store)
        if error:
            raise InputError(f"LLM settings: {error}")
        wl = ctx.whitelist_for_write()
        flows = flood_evidence(ctx)
        p = ask_for_rules(ctx.store, cfg, flows, protected=ctx.protected(wl),
                          ssh_ports=wl.config["protect_ssh_ports"],
                          trigger={"kind": "dashboard", "src": ", ".join(f["src"] for f in flows)})
        return summary(p) + " below."
    act(do)


def ask_llm(ctx: Ctx) -> None:
    flows = flood_evidence(ctx)
    st.subheader("Ask the LLM for rules")
    if flows:
        st.caption("Recent flood evidence it will see: " +
                   md(", ".join(f"{f['src']} ({f.get('pps', 0):,.0f} pps)" for f in flows)))
    else:
        st.caption("No flood evidence in the analyzer's recent events yet.")
    st.button("Propose rules", key="rules_ask", disabled=not flows, on_click=_ask, args=(ctx,))


# ------------------------------------------------------------------ by hand
def _add(ctx: Ctx) -> None:
    text = (st.session_state.get("rule_json") or "").strip()

    def do() -> str:
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as e:
            raise InputError(f"Not JSON: {e.msg} (line {e.lineno}, column {e.colno}).") from None
        wl = ctx.whitelist_for_write()
        try:
            rule = parse_rule(raw)
            check_rule_policy(rule, ctx.protected(wl), wl.config["protect_ssh_ports"])
        except RuleRefused as e:
            raise InputError(f"Rule refused: {e}") from None
        _queue(ctx, {"action": "add_rule", "rule": {**raw, "id": rule.id}})
        return f"Rule {rule.id} queued; {loader_hint(ctx)}"

    if act(do, audit=(ctx, "rule_add", {"rule": text})):
        st.session_state["rule_json"] = ""


def by_hand(ctx: Ctx) -> None:
    with st.form("rule_form"):
        st.subheader("Add a rule")
        st.text_area("Rule (JSON)", key="rule_json", height=90,
                     placeholder='{"action": "drop", "src": "203.0.113.0/24", "proto": "udp", "sport": 1900}')
        st.caption("Fields: id, action (drop|count|ratelimit), src (IP/CIDR or any), proto (tcp, udp, icmp, "
                   "icmpv6, any), sport/dport (port or \"lo-hi\"), tcp_flags (\"SYN,!ACK\"), icmp_type, "
                   "rate_pps and burst (ratelimit: packets/s let through; hits are the packets over it), "
                   "reason, ttl_seconds. Checked here and again by the loader.")
        st.form_submit_button("Add", key="rule_add_submit", on_click=_add, args=(ctx,))


def commands(ctx: Ctx, now: float) -> None:
    queued = [c for c in _file(ctx, RULE_COMMANDS, []) if isinstance(c, dict)]
    refused = [r for r in _file(ctx, RULE_COMMANDS_REJECTED, []) if isinstance(r, dict)]
    with st.expander(f"Rule commands queued ({len(queued)}) and refused ({len(refused)})"):
        for c in queued:
            st.markdown(f"queued {ago(c.get('requested_at'), now)}: {code(json.dumps(c))}")
        for r in reversed(refused):
            st.markdown(f"refused {ago(r.get('rejected_at'), now)}: {md(r.get('error'))}  \n"
                        f"{code(json.dumps(r.get('command')))}")


def render(ctx: Ctx) -> None:
    st.header("Filter rules")
    now = time.time()
    pending_proposals(ctx, now)
    in_force(ctx, now)
    ask_llm(ctx)
    by_hand(ctx)
    commands(ctx, now)
