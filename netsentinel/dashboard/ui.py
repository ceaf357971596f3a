"""Pieces the pages share: action results that survive the rerun, the TTL
picker, level colours, and the "will the loader apply this?" hint."""

from __future__ import annotations

import json
import re
import time
from typing import Callable

import streamlit as st

from ..bancheck import BanRefused
from ..errors import NetSentinelError
from .context import Ctx
from .status import liveness

LEVEL_COLORS = {"INFO": "#8da0b3", "MEDIUM": "#f2b134", "HIGH": "#ef7d2d", "CRITICAL": "#d62d20"}
LEVEL_ICONS = {"INFO": ":gray[●]", "MEDIUM": ":orange[●]", "HIGH": ":orange[●]", "CRITICAL": ":red[●]"}

TTL_CHOICES = {"permanent": None, "1 hour": 3600, "24 hours": 86400, "7 days": 7 * 86400,
               "30 days": 30 * 86400}

# Process names, command lines and LLM reasons are attacker-influenced: shown
# as text, never as markdown (no links, images, colour directives or LaTeX).
_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~$:=])")


def md(value: object) -> str:
    """Text for st.markdown, every markdown character escaped."""
    return _MD_SPECIAL.sub(r"\\\1", str(value)).replace("\n", " ")


def code(value: object) -> str:
    """An inline code span (a backtick inside would end it early)."""
    return "`" + str(value).replace("`", "'").replace("\n", " ") + "`"


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
        getattr(st, kind)(message)


# What a person can get wrong, or another process can be doing: one line
# each. Anything else is a bug and shows as one.
EXPECTED_ERRORS = (NetSentinelError,)


def act(action: Callable[[], str], refused: str = "Refused: {}") -> bool:
    """Run a write; flash its success line or its one-line error (a refused
    ban worded by `refused`). True on success."""
    try:
        flash("success", action())
        return True
    except BanRefused as e:
        flash("error", refused.format(e))
    except EXPECTED_ERRORS as e:
        flash("error", str(e))
    return False


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


def ttl_select(key: str, label: str = "Expires after") -> None:
    st.selectbox(label, list(TTL_CHOICES), key=key)


def ttl_seconds(key: str) -> int | None:
    return TTL_CHOICES.get(st.session_state.get(key, "permanent"))


def loader_hint(ctx: Ctx) -> str:
    """Appended to 'queued' messages: is anyone going to apply the command?"""
    if liveness("loader", ctx.snap.loader_status).running:
        return "the loader applies it within a second."
    return "the loader is not running: it will be applied when the loader starts."


def show_notices(ctx: Ctx) -> None:
    for _, notice in sorted(ctx.snap.notices.items()):
        st.warning(notice, icon="⚠️")
