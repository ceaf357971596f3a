"""LLM settings: records/llm_config.json through netsentinel.llm.config
(validated; the analyzer hot-reloads it), and a "test connection" probe.
API keys live in .env / the environment and are never shown."""

from __future__ import annotations

import os

import streamlit as st

from .. import dashcmd
from ..llm.config import (DEFAULT_LLM_CONFIG, FIELD, ROOT_ONLY_SETTINGS, Field, load_llm_config,
                          save_llm_config, validate_llm_config)
from ..llm.env import load_env
from ..llm.probe import probe_backend
from ..records import LLM_CONFIG
from .context import Ctx
from .data import mask_secret, mask_text, masked
from .status import liveness
from .ui import act, analyzer_hint, flash, md, needs_confirmation, sync_widgets

SECRET_ENV = ("ZHIPUAI_API_KEY", "OPENAI_API_KEY")
# The analyzer's probe has a 5 s timeout of its own, and polls its commands
# every quarter second.
PROBE_WAIT_S = 8.0
URL_ENV = ("ZHIPUAI_BASE_URL", "OLLAMA_HOST", "OPENAI_BASE_URL")

# The form: sections of (widget key, setting). Labels, bounds, choices and
# help come from the field table (llm/config.FIELDS); only the layout is here.
FORM = (
    ("", (("llm_backend", "backend"), ("llm_model", "model"), ("llm_host", "host"),
          ("llm_temperature", "temperature"), ("llm_timeout", "timeout_seconds"),
          ("llm_scope", "llm_scope"))),
    ("**Thresholds**", (("llm_max_calls", "max_calls_per_minute"),
                        ("llm_scan_window", "scan_window_seconds"),
                        ("llm_scan_ports", "scan_port_threshold"),
                        ("llm_scan_hosts", "scan_host_threshold"))),
    ("**Auto-ban** (CRITICAL only; HIGH always waits for a person)",
     (("llm_auto_ban", "auto_ban_critical"), ("llm_auto_conf", "auto_ban_min_confidence"),
      ("llm_auto_ttl", "auto_ban_ttl_seconds"))),
)
WIDGETS = {key: FIELD[setting] for _, row in FORM for key, setting in row}
_SLIDERS = {"temperature": 0.05, "auto_ban_min_confidence": 0.01}  # setting -> step
_PLACEHOLDERS = {"model": "empty: the backend's default",
                 "host": "empty: from the environment or the default"}


def to_setting(field: Field, value):
    """A widget's value as the setting (empty text: null)."""
    if field.kind in ("model", "url"):
        return value.strip() or None
    return {"int": int, "float": float, "bool": bool}.get(field.kind, str)(value)


def to_widget(field: Field, value):
    if field.kind in ("model", "url"):
        return value or ""
    return {"int": int, "float": float, "bool": bool}.get(field.kind, str)(value)




def widget(col, key: str, field: Field, locked: bool = False) -> None:
    """The widget for one setting, bounded exactly as validation bounds it."""
    kw = {"key": key, "help": field.help + (f" (only root changes this: edit {LLM_CONFIG} as "
                                             "root, or the analyzer's flags)" if locked else ""),
          "disabled": locked}
    if field.kind == "choice":
        col.selectbox(field.label, field.choices, **kw)
    elif field.kind == "bool":
        col.toggle(field.label, **kw)
    elif field.kind in ("model", "url"):
        col.text_input(field.label, placeholder=_PLACEHOLDERS.get(field.name), **kw)
    elif field.name in _SLIDERS:
        col.slider(field.label, float(field.lo), float(field.hi), step=_SLIDERS[field.name], **kw)
    else:
        num = int if field.kind == "int" else float
        col.number_input(field.label, num(field.lo), num(field.hi), **kw)


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
    for key, field in WIDGETS.items():
        if key in st.session_state:
            out[field.name] = to_setting(field, st.session_state[key])
    out["updated_by"] = "dashboard"
    return out


def _save(ctx: Ctx, cfg: dict) -> None:
    new = form_config(cfg)

    def do() -> str:
        # The backend's API key goes to this host: a new one is confirmed first.
        if (new.get("host") or None) != (cfg.get("host") or None):
            needs_confirmation("llm_host_ok", f"Changing the host to {new.get('host') or 'the default'} "
                                              "sends the API key there")
        if ctx.queued:
            validate_llm_config(new)  # a bad value is answered here, before anything is queued
            applied = ctx.ask("settings", config=new)
            return f"Save {LLM_CONFIG}: {analyzer_hint(ctx, applied)}."
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
    if ctx.queued:
        # Unprivileged, this process has none of root's API keys (.env is
        # root's): the analyzer, which has them, runs the test.
        try:
            cid = dashcmd.submit(ctx.settings.records, "probe", ctx.who)
        except OSError as e:
            flash("error", f"Test connection: cannot ask the analyzer: {e}")
            return
        ctx.answers([cid], wait=PROBE_WAIT_S)
        entry = dashcmd.answer(ctx.store, cid)
        if entry is None:
            flash("warning", f"Test connection: {analyzer_hint(ctx, False)}.")
            return
        ok = entry.get("outcome") == "ok"
        message = f"{(entry.get('details') or {}).get('message')} (tested by the analyzer)"
    else:
        cfg, _ = in_force(ctx)
        ok, message = probe_backend(cfg, timeout=5)
    flash("success" if ok else "error", f"Test connection (saved settings): {mask_text(message)}")


def settings_form(ctx: Ctx, cfg: dict) -> None:
    if sync_widgets("llm", {key: to_widget(field, cfg[field.name]) for key, field in WIDGETS.items()}):
        st.info("The settings changed since the form was filled; it now shows what is in force.")
    with st.form("llm_form"):
        for title, row in FORM:
            if title:
                st.markdown(title)
            cols = st.columns(3 if len(row) != 4 else 4)
            for i, (key, setting) in enumerate(row):
                widget(cols[i % len(cols)], key, FIELD[setting],
                       locked=ctx.queued and setting in ROOT_ONLY_SETTINGS)
            if "llm_host" in dict(row):
                cols[2].checkbox("Yes, send the API key to this host", key="llm_host_ok",
                                 help="needed to save a changed host")
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
