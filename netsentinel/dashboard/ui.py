"""Pieces the pages share: action results that survive the rerun, the TTL
picker, level colours, and the "will the loader apply this?" hint."""

from __future__ import annotations

import json
import re
import time
from typing import Callable

import streamlit as st

from ..bancheck import BanRefused
from ..errors import InputError, NetSentinelError
from ..store import StoreError
from .context import Ctx
from .status import liveness

LEVEL_COLORS = {"INFO": "#8da0b3", "MEDIUM": "#f2b134", "HIGH": "#ef7d2d", "CRITICAL": "#d62d20"}
LEVEL_ICONS = {"INFO": ":gray[●]", "MEDIUM": ":orange[●]", "HIGH": ":orange[●]", "CRITICAL": ":red[●]"}

TTL_CHOICES = {"permanent": None, "1 hour": 3600, "24 hours": 86400, "7 days": 7 * 86400,
               "30 days": 30 * 86400}

# Process names, command lines, paths, model output and backend error text
# are attacker-controlled: never markdown. Long values go through st.text /
# st.code; short ones inside a markdown line through md(), which escapes
# every markdown character AND breaks what GitHub-flavoured markdown turns
# into links by itself (http://..., www.x, a@b.c: Streamlit's renderer finds
# those in the text after escapes are undone), with an invisible word joiner.
_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~$:=&^\"'])")
# GFM's literal autolinks: scheme://..., www., and e-mail (mailto:/xmpp: need an @ too).
_AUTOLINK = re.compile(r"(?i)(?<=:)(?=//)|(?<=www)(?=\.)|(?<=@)")
_JOINER = "\u2060"


def md(value: object) -> str:
    """Text for st.markdown (and widget labels): shown as written, never
    as a link, image, colour, formula or HTML."""
    text = _AUTOLINK.sub(_JOINER, str(value).replace("\r", " ").replace("\n", " "))
    return _MD_SPECIAL.sub(r"\\\1", text)


def code(value: object) -> str:
    """An inline code span (a backtick inside would end it early); code is
    never linked."""
    return "`" + str(value).replace("`", "'").replace("\n", " ").replace("\r", " ") + "`"


_FLASH = "_flash"
# Long enough to be read across a few auto-refreshes.
FLASH_SECONDS = 15.0


def flash(kind: str, message: str) -> None:
    """Show a message from now on for FLASH_SECONDS (actions run in widget
    callbacks, before the render that reports them)."""
    st.session_state.setdefault(_FLASH, []).append((time.monotonic(), kind, message))


def show_flash() -> None:
    now = time.monotonic()
    live = [m for m in st.session_state.get(_FLASH, []) if now - m[0] < FLASH_SECONDS]
    st.session_state[_FLASH] = live
    for _, kind, message in reversed(live):  # newest first
        # Messages quote what was typed and what a backend answered: plain text.
        getattr(st, kind)(md(message))


# What a person can get wrong, or another process can be doing: one line
# each. Anything else is a bug and shows as one.
EXPECTED_ERRORS = (NetSentinelError,)


def act(action: Callable[[], str], refused: str = "Refused: {}",
        audit: tuple[Ctx, str, dict] | None = None) -> bool:
    """Run a write; flash its success line or its one-line error (a refused
    ban worded by `refused`). True on success. audit=(ctx, action, details):
    the attempt and its outcome go to the audit trail."""
    if audit is not None:
        audit[0].asked = False
    try:
        flash("success", action())
        outcome, ok = "ok", True
    except BanRefused as e:
        flash("error", refused.format(e))
        outcome, ok = f"refused: {e}", False
    except EXPECTED_ERRORS as e:
        flash("error", str(e))
        outcome, ok = f"refused: {e}", False
    # An action the analyzer carried out is audited there; read-only: none kept.
    if audit is not None and not audit[0].asked and not audit[0].read_only():
        ctx, name, details = audit
        try:
            ctx.audit(name, details, outcome)
        except StoreError as e:
            flash("error", f"Not recorded in the audit trail: {e}. Fix records/ before acting again.")
    return ok


def sync_widgets(name: str, values: dict) -> bool:
    """Give a form's widgets the file's current values when the file changed
    since they were last given (a save here, or someone else's edit), and
    leave them alone otherwise so what the user is typing survives refreshes.
    Call before the widgets are drawn. True when values were replaced."""
    marker = f"_sync_{name}"
    sig = json.dumps(values, sort_keys=True, default=str)
    if st.session_state.get(marker) == sig:
        return False
    changed = marker in st.session_state
    st.session_state[marker] = sig
    st.session_state.update(values)
    return changed


# A permanent ban is one of the dangerous actions: not the default, and it
# needs the form's confirmation box (PERMANENT_CONFIRM).
DEFAULT_TTL = "24 hours"
PERMANENT_CONFIRM = "Yes, ban permanently"


def ttl_select(key: str, label: str = "Expires after") -> None:
    st.selectbox(label, list(TTL_CHOICES), index=list(TTL_CHOICES).index(DEFAULT_TTL), key=key)


def check_permanent(ttl_key: str, confirm_key: str) -> None:
    if ttl_seconds(ttl_key) is None:
        needs_confirmation(confirm_key, "A permanent ban needs confirmation")


def ttl_seconds(key: str) -> int | None:
    return TTL_CHOICES.get(st.session_state.get(key, DEFAULT_TTL))


def analyzer_hint(ctx: Ctx, applied: bool) -> str:
    """Appended to actions the analyzer carries out for an unprivileged dashboard."""
    if applied:
        return "done by the analyzer"
    if liveness("analyzer", ctx.snap.analyzer_status).running:
        return "queued for the analyzer (not applied yet: see the Audit page)"
    return "queued: the analyzer is not running; it applies it when it starts"


def loader_hint(ctx: Ctx) -> str:
    """Appended to 'queued' messages: is anyone going to apply the command?"""
    if liveness("loader", ctx.snap.loader_status).running:
        return "the loader applies it within a second."
    return "the loader is not running: it will be applied when the loader starts."


def show_notices(ctx: Ctx) -> None:
    for _, notice in sorted(ctx.snap.notices.items()):
        st.warning(md(notice), icon="⚠️")


def confirm_box(key: str, label: str) -> bool:
    """A tick-box a dangerous action needs (inside the action's form)."""
    return bool(st.checkbox(label, key=key))


def needs_confirmation(key: str, what: str) -> None:
    """Raise (a one-line refusal) unless the form's confirm box is ticked."""
    if not st.session_state.get(key):
        raise InputError(f"{what}: tick the confirmation box and submit again.")
