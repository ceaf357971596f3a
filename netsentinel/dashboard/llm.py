"""LLM settings: records/llm_config.json through netsentinel.llm.config
(validated; the analyzer hot-reloads it), and a "test connection" probe.
API keys live in .env / the environment and are never shown."""

from __future__ import annotations

import os

import streamlit as st

from ..llm.config import (BACKENDS, DEFAULT_LLM_CONFIG, SCOPES, load_env, load_llm_config,
                          probe_backend, save_llm_config, validate_llm_config)
from ..store import LLM_CONFIG
from .context import Ctx
from .data import mask_secret, mask_text, masked
from .status import liveness
from .ui import act, flash, md, needs_confirmation, sync_widgets

SECRET_ENV = ("ZHIPUAI_API_KEY", "OPENAI_API_KEY")
URL_ENV = ("ZHIPUAI_BASE_URL", "OLLAMA_HOST", "OPENAI_BASE_URL")

# form key -> (setting, widget value -> setting, setting -> widget value)
FIELDS = {
    "llm_backend": ("backend", str, str),
    "llm_model": ("model", lambda v: v.strip() or None, lambda v: v or ""),
    "llm_host": ("host", lambda v: v.strip() or None, lambda v: v or ""),
    "llm_temperature": ("temperature", float, float),
    "llm_timeout": ("timeout_seconds", float, float),
    "llm_scope": ("llm_scope", str, str),
    "llm_max_calls": ("max_calls_per_minute", int, int),
    "llm_scan_window": ("scan_window_seconds", float, float),
    "llm_scan_ports": ("scan_port_threshold", int, int),
    "llm_scan_hosts": ("scan_host_threshold", int, int),
    "llm_auto_ban": ("auto_ban_critical", bool, bool),
    "llm_auto_conf": ("auto_ban_min_confidence", float, float),
    "llm_auto_ttl": ("auto_ban_ttl_seconds", int, int),
}


def in_force(ctx: Ctx) -> tuple[dict, str | None]:
    """What the analyzer runs with (its flags + the file), else defaults +
    the file: the form starts from it so saving does not undo flags."""
    base = (ctx.snap.analyzer_status.get("config") or {}).get("in_force")
    try:
        base = validate_llm_config(base) if isinstance(base, dict) else None
    except ValueError:
        base = None
    return load_llm_config(ctx.store, base or DEFAULT_LLM_CONFIG)


def form_config(cfg: dict) -> dict:
    out = {k: v for k, v in cfg.items() if k not in ("updated_at", "updated_by")}
    for key, (setting, to_setting, _) in FIELDS.items():
        if key in st.session_state:
            out[setting] = to_setting(st.session_state[key])
    out["updated_by"] = "dashboard"
    return out


def _save(ctx: Ctx, cfg: dict) -> None:
    new = form_config(cfg)

    def do() -> str:
        # The backend's API key goes to this host: a new one is confirmed first.
        if (new.get("host") or None) != (cfg.get("host") or None):
            needs_confirmation("llm_host_ok", f"Changing the host to {new.get('host') or 'the default'} "
                                              "sends the API key there")
        saved = save_llm_config(ctx.store, new)
        who = ("the analyzer picks it up within a second" if
               liveness("analyzer", ctx.snap.analyzer_status).running
               else "the analyzer is not running: it uses it when it starts")
        return f"Saved llm_config.json (backend {saved['backend']}); {who}."

    act(do, audit=(ctx, "llm_settings", {k: v for k, v in new.items() if k != "updated_by"}))
    st.session_state["llm_host_ok"] = False


def _probe(ctx: Ctx) -> None:
    """Probes what is SAVED (root's file or the analyzer's flags), never what
    is typed in the form: an API key only goes to the configured endpoint."""
    owner = ctx.store.stat(LLM_CONFIG)
    if owner is not None and owner.st_uid not in (0, os.geteuid()):
        flash("error", f"Test connection refused: {LLM_CONFIG} belongs to uid {owner.st_uid}, not "
                       "root; fix its owner (chown root) before a key is sent anywhere.")
        return
    cfg, _ = in_force(ctx)
    ok, message = probe_backend(cfg, timeout=5)
    flash("success" if ok else "error", f"Test connection (saved settings): {mask_text(message)}")


def settings_form(ctx: Ctx, cfg: dict) -> None:
    if sync_widgets("llm", {key: to_widget(cfg[setting])
                            for key, (setting, _, to_widget) in FIELDS.items()}):
        st.info("The settings changed since the form was filled; it now shows what is in force.")
    with st.form("llm_form"):
        c1, c2, c3 = st.columns(3)
        c1.selectbox("Backend", BACKENDS, key="llm_backend",
                     help="auto: zhipuai when ZHIPUAI_API_KEY is set, else ollama when it answers, "
                          "else rules only")
        c2.text_input("Model", key="llm_model",
                      placeholder="empty: the backend's default")
        c3.text_input("Host / base URL", key="llm_host",
                      placeholder="empty: from the environment or the default")
        c3.checkbox("Yes, send the API key to this host", key="llm_host_ok",
                    help="needed to save a changed host")
        c1.slider("Temperature", 0.0, 2.0, step=0.05, key="llm_temperature")
        c2.number_input("Timeout per call (s)", 0.1, 600.0, key="llm_timeout")
        c3.selectbox("Ask the LLM about", SCOPES, key="llm_scope",
                     help="unsettled: only what the rules are not sure of")
        st.markdown("**Thresholds**")
        c1, c2, c3, c4 = st.columns(4)
        c1.number_input("Max LLM calls / min", 1, 100000, key="llm_max_calls")
        c2.number_input("Scan window (s)", 1.0, 86400.0, key="llm_scan_window")
        c3.number_input("Port-scan threshold (ports)", 2, 65535, key="llm_scan_ports")
        c4.number_input("Host-sweep threshold (hosts)", 2, 1000000, key="llm_scan_hosts")
        st.markdown("**Auto-ban** (CRITICAL only; HIGH always waits for a person)")
        c1, c2, c3 = st.columns(3)
        c1.toggle("Auto-ban CRITICAL threats", key="llm_auto_ban")
        c2.slider("Minimum confidence", 0.0, 1.0, step=0.01, key="llm_auto_conf")
        c3.number_input("Auto-ban expires after (s)", 1, 10 * 365 * 86400, key="llm_auto_ttl")
        b1, b2, _ = st.columns([1, 1, 4])
        with b1:
            st.form_submit_button("Save", type="primary", key="llm_save", on_click=_save,
                                  args=(ctx, cfg))
        with b2:
            st.form_submit_button("Test connection", key="llm_test", on_click=_probe, args=(ctx,),
                                  help="probes the saved settings; save first")


def environment() -> None:
    load_env()
    rows = [{"variable": k, "value": mask_secret(os.environ.get(k))} for k in SECRET_ENV]
    rows += [{"variable": k, "value": mask_text(os.environ[k]) if os.environ.get(k) else "not set"}
             for k in URL_ENV]
    st.dataframe(rows, hide_index=True, key="llm_env")


def render(ctx: Ctx) -> None:
    st.header("LLM settings")
    cfg, error = in_force(ctx)
    status = ctx.snap.analyzer_status
    if status:
        st.caption(f"Analyzer uses backend **{status.get('backend', '?')}**"
                   f"{' model ' + str(status['model']) if status.get('model') else ''}: "
                   f"{md(mask_text(str(status.get('backend_status', '?'))))}")
    if error:
        st.warning(f"{md(error)}. The analyzer keeps its previous settings; saving here replaces the file.")
    settings_form(ctx, cfg)
    st.caption("Saved to records/llm_config.json; the analyzer reloads it without a restart. "
               "API keys are read from .env or the environment, never from here.")
    with st.expander("Environment (.env) and the file in force"):
        environment()
        st.json(masked(cfg), expanded=False)
