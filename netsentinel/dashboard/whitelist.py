"""Whitelist: trusted addresses, processes and ports in filter_config.json
(WhitelistFile.edit / save, validated; the loader and analyzer hot-reload it)."""

from __future__ import annotations

import ipaddress
import json

import streamlit as st

from ..errors import InputError
from ..store import StoreError
from ..whitelist import KINDS, ConfigError, Whitelist, normalize_entry, validate_config
from .context import Ctx
from .ui import act, analyzer_hint, md, needs_confirmation, sync_widgets

KIND_LABELS = {"ip": "IP or CIDR", "process": "process (comm or absolute exe path)", "port": "port"}
# Trusting a network wider than these hides every connection to it and
# blocks every ban inside it: the form asks for confirmation first.
BROAD_PREFIX = {4: 24, 6: 64}
BROAD_CONFIRM = "Yes, trust this whole network"


def broad(entries) -> list[str]:
    """The entries that are networks wider than BROAD_PREFIX."""
    out = []
    for e in entries:
        try:
            net = ipaddress.ip_network(str(e).strip(), strict=False)
        except ValueError:
            continue  # not an address: the whitelist's own validation says why
        if net.prefixlen < BROAD_PREFIX[net.version]:
            out.append(str(net))
    return out


def _confirm_broad(entries, key: str) -> None:
    wide = broad(entries)
    if wide:
        needs_confirmation(key, f"Trusting {', '.join(wide)} hides every connection to it and "
                                "blocks every ban inside it")


def _add(ctx: Ctx) -> None:
    kind = st.session_state.get("wl_kind", "ip")
    value = (st.session_state.get("wl_value") or "").strip()

    def do() -> str:
        if not value:
            raise InputError(f"Enter a {KIND_LABELS[kind]}.")
        if kind == "ip":
            _confirm_broad([value], "wl_broad_ok")
        if ctx.queued:
            normalize_entry(kind, value)  # a typo is refused here, before anything is queued
            applied = ctx.ask("whitelist_add", entry_kind=kind, value=value)
            return f"Trust {kind} {value}: {analyzer_hint(ctx, applied)}."
        changed, entry = ctx.whitelist_file.edit(kind, value)
        return f"Trusted {kind} {entry}." if changed else f"{kind} {entry} was already trusted."

    if act(do, audit=(ctx, "whitelist_add", {"kind": kind, "value": value})):
        st.session_state["wl_value"] = ""
        st.session_state["wl_broad_ok"] = False


def _remove(ctx: Ctx) -> None:
    picked = st.session_state.get("wl_remove")

    def do() -> str:
        if not picked:
            raise InputError("Pick an entry to remove.")
        kind, value = picked.split(" ", 1)
        if ctx.queued:
            applied = ctx.ask("whitelist_remove", entry_kind=kind, value=value)
            return f"Stop trusting {kind} {value}: {analyzer_hint(ctx, applied)}."
        changed, entry = ctx.whitelist_file.edit(kind, value, remove=True)
        return f"No longer trusted: {kind} {entry}." if changed else f"{kind} {entry} was not trusted."

    act(do, audit=(ctx, "whitelist_remove", {"entry": picked}))


def _save_options(ctx: Ctx, wl: Whitelist) -> None:
    def do() -> str:
        cfg = dict(wl.config)
        ports = [p.strip() for p in (st.session_state.get("wl_ssh_ports") or "").split(",") if p.strip()]
        cfg.update(whitelisted_connections=st.session_state["wl_mode"], protect_ssh_ports=ports,
                   min_ban_prefix={"ipv4": int(st.session_state["wl_min4"]),
                                   "ipv6": int(st.session_state["wl_min6"])})
        return _save(ctx, cfg)

    act(do, audit=(ctx, "whitelist_options", {
        "whitelisted_connections": st.session_state.get("wl_mode"),
        "protect_ssh_ports": st.session_state.get("wl_ssh_ports"),
        "min_ban_prefix": [st.session_state.get("wl_min4"), st.session_state.get("wl_min6")]}))


def _save_raw(ctx: Ctx) -> None:
    def do() -> str:
        text = st.session_state.get("wl_raw") or ""
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as e:
            raise InputError(f"not valid JSON at line {e.lineno} column {e.colno}: {e.msg}") from None
        new = raw.get("trusted_ips") if isinstance(raw, dict) else None
        if isinstance(new, list):
            _confirm_broad([e for e in new if str(e) not in map(str, old_ips)], "wl_raw_broad_ok")
        return _save(ctx, raw)

    old_ips = _current_ips(ctx)
    act(do, audit=(ctx, "whitelist_edit", {"json": st.session_state.get("wl_raw") or ""}))


def _save(ctx: Ctx, cfg) -> str:
    """The whole file, validated here first (a typo is answered at once),
    written here as root or by the analyzer for an unprivileged dashboard."""
    valid = validate_config(cfg)
    if ctx.queued:
        applied = ctx.ask("whitelist_save", config=cfg)
        return f"Save {ctx.whitelist_file.name}: {analyzer_hint(ctx, applied)}."
    ctx.whitelist_file.save(valid)
    return f"Saved {ctx.whitelist_file.name}."


def _current_ips(ctx: Ctx) -> list:
    """The trusted IPs on disk now ([] when the file is broken: then every
    broad entry in the new text needs confirming)."""
    try:
        return list(ctx.whitelist_file.load().config["trusted_ips"])
    except (ConfigError, StoreError):
        return []


def entries(ctx: Ctx, wl: Whitelist) -> None:
    cols = st.columns(3)
    for col, (kind, key) in zip(cols, KINDS.items()):
        col.markdown(f"**{key}**")
        items = wl.config[key]
        col.code("\n".join(str(x) for x in items) if items else "(none)", language=None)
    with st.form("wl_add_form"):
        c1, c2 = st.columns([1, 3])
        c1.selectbox("Kind", list(KINDS), key="wl_kind", format_func=lambda k: k)
        c2.text_input("Value", key="wl_value", placeholder="192.0.2.10, 10.20.0.0/16, chronyd, 53")
        st.checkbox(BROAD_CONFIRM, key="wl_broad_ok",
                    help=f"needed for networks wider than /{BROAD_PREFIX[4]} (IPv4) or /{BROAD_PREFIX[6]} (IPv6)")
        st.form_submit_button("Trust", type="primary", key="wl_add", on_click=_add, args=(ctx,))
    options = [f"{kind} {v}" for kind, key in KINDS.items() for v in wl.config[key]]
    if options:
        c1, c2 = st.columns([3, 1], vertical_alignment="bottom")
        c1.selectbox("Remove an entry", options, key="wl_remove")
        c2.button("Remove", key="wl_remove_submit", on_click=_remove, args=(ctx,))


def options(ctx: Ctx, wl: Whitelist) -> None:
    cfg = wl.config
    sync_widgets("wl_options", {"wl_mode": cfg["whitelisted_connections"],
                                "wl_ssh_ports": ", ".join(str(p) for p in cfg["protect_ssh_ports"]),
                                "wl_min4": cfg["min_ban_prefix"]["ipv4"],
                                "wl_min6": cfg["min_ban_prefix"]["ipv6"]})
    with st.form("wl_options_form"):
        st.subheader("Options")
        c1, c2, c3, c4 = st.columns(4)
        c1.selectbox("Whitelisted connections", ["hide", "mark"], key="wl_mode",
                     help="hide: not emitted; mark: emitted with a whitelisted reason")
        c2.text_input("Protected SSH ports", key="wl_ssh_ports",
                      help="peers of live sessions on these ports can never be banned")
        c3.number_input("Shortest IPv4 ban prefix", 0, 32, key="wl_min4")
        c4.number_input("Shortest IPv6 ban prefix", 0, 128, key="wl_min6")
        st.form_submit_button("Save options", key="wl_options_save", on_click=_save_options,
                              args=(ctx, wl))


def raw_editor(ctx: Ctx, text: str, broken: bool) -> None:
    sync_widgets("wl_raw", {"wl_raw": text})
    with st.expander("Edit filter_config.json as JSON", expanded=broken):
        with st.form("wl_raw_form", border=False):
            st.text_area("filter_config.json", height=260, key="wl_raw")
            st.checkbox(BROAD_CONFIRM, key="wl_raw_broad_ok", help="needed when the text adds a "
                        f"network wider than /{BROAD_PREFIX[4]} (IPv4) or /{BROAD_PREFIX[6]} (IPv6)")
            st.form_submit_button("Validate and save", key="wl_raw_save", on_click=_save_raw,
                                  args=(ctx,))


def render(ctx: Ctx) -> None:
    st.header("Whitelist")
    st.caption(f"{ctx.settings.config} — trusted entries are never banned and their connections "
               "are not reported. Changes take effect on the next event.")
    wf = ctx.whitelist_file
    try:
        text = wf.store.read_text(wf.name) or ""
    except StoreError as e:
        st.error(md(e))
        return
    try:
        wl = wf.load()
    except (ConfigError, StoreError) as e:
        st.error(f"{wf.name} is not usable: {md(e)}. The loader keeps the whitelist it had; fix the "
                 "file below (nothing here rewrites it until you save).")
        raw_editor(ctx, text, broken=True)
        return
    entries(ctx, wl)
    options(ctx, wl)
    raw_editor(ctx, text or json.dumps(wl.config, indent=2), broken=False)
