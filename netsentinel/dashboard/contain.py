"""Review's "Contain process" (issue 12): for a threat whose actor is a local
process, the default answer is to keep that process (and its executable) off
the network, not to ban the host it was scanning; stopping it too is
optional and must be confirmed. contain_inputs() draws the widgets inside
the threat's form; the action itself is reviewactions.contain."""

from __future__ import annotations

import streamlit as st

from .. import threats
from .ui import code

STOP_CHOICES = {"no": None, "SIGTERM": "TERM", "SIGKILL": "KILL"}


def contain_inputs(t: dict) -> None:
    """Stop it too? (with its confirmation box). Only for a local actor."""
    actor = threats.local_actor(t)
    if actor is None:
        return
    tid = str(t.get("id"))
    st.selectbox(f"After containing pid {actor['pid']}, also stop it", list(STOP_CHOICES),
                 key=f"stop_{tid}", help="sockets it opened before it was contained keep working "
                                         "until it stops")
    st.checkbox(f"Confirm: stop pid {actor['pid']} ({code(actor.get('exe') or actor.get('comm'))})",
                key=f"stopok_{tid}")
    st.checkbox("Contain only this process, not every run of its executable", key=f"proconly_{tid}")
