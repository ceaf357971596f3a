"""Review's "Contain process" (issue 12): for a threat whose actor is a local
process, the default answer is to keep that process (and its executable) off
the network, not to ban the host it was scanning; stopping it too is
optional and must be confirmed. Callable from any Review layout:
contain_inputs() draws the widgets inside the threat's form, contain_threat()
is the submit button's on_click."""

from __future__ import annotations

import streamlit as st

from .. import threats
from .context import Ctx
from .ui import act, analyzer_hint, code, loader_hint, needs_confirmation, ttl_seconds

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


def contain_threat(ctx: Ctx, tid: str) -> None:
    """Approve by containing: a contain command for the threat's process."""
    stop = STOP_CHOICES.get(st.session_state.get(f"stop_{tid}", "no"))
    by_exe = not st.session_state.get(f"proconly_{tid}", False)

    def do() -> str:
        if stop:
            needs_confirmation(f"stopok_{tid}", f"Stopping the process with SIG{stop}")
        if ctx.queued:  # unprivileged: root's analyzer decides it and queues the command
            applied = ctx.ask("contain", threat=tid, ttl_seconds=ttl_seconds(f"ttl_{tid}"),
                              note=st.session_state.get(f"note_{tid}") or None, stop=stop, by_exe=by_exe)
            return f"Contain {tid}: {analyzer_hint(ctx, applied)}; the loader then contains it."
        t = threats.contain(ctx.store, tid, by="dashboard", note=st.session_state.get(f"note_{tid}"),
                            ttl_seconds=ttl_seconds(f"ttl_{tid}"), stop=stop, by_exe=by_exe)
        cmd = t["contain_command"]
        what = f"pid {cmd['pid']}" + (" and its executable" if cmd.get("by_exe") else "")
        return f"Approved: containment of {what} queued; {loader_hint(ctx)}"
    act(do, audit=(ctx, "contain", {"threat": tid, "ttl_seconds": ttl_seconds(f"ttl_{tid}"),
                                    "stop": stop, "by_exe": by_exe}))
