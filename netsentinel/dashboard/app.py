"""Layout: the password gate, the sidebar (navigation, loader/analyzer
liveness, refresh), one page, and the auto-refresh.

The page choice lives in session state and the URL (?page=review), so a
refresh or a reload keeps the user where they were; forms hold their
half-typed values across refreshes because a form is only sent on submit.
"""

from __future__ import annotations

import streamlit as st
from streamlit_autorefresh import st_autorefresh

from ..errors import InputError
from ..store import RecordsStore, StoreError
from . import auditlog, bans, events, filter_rules, history, llm, overview, review, stack, whitelist
from .auth import REFRESH_KEY, require_access, sign_out
from .context import Ctx, write_audit
from .settings import load_settings
from .status import liveness
from .ui import flash, md, show_flash, show_notices

PAGES = {"Overview": overview.render, "Events": events.render, "Review": review.render,
         "History": history.render,
         "Bans": bans.render, "Filter rules": filter_rules.render, "Whitelist": whitelist.render,
         "LLM settings": llm.render, "Audit": auditlog.render}
PAGES["Stack"] = stack.render  # issue 17: drop reasons and TCP health
SLUGS = {name: name.split()[0].lower() for name in PAGES}
# Markdown colours, not emoji: a machine without an emoji font renders them as boxes.
STATE_ICONS = {"running": ":green[●]", "stale": ":orange[●]", "stopped": ":red[●]", "absent": ":gray[○]"}


def _initial_page() -> str:
    slug = st.query_params.get("page")
    return next((n for n, s in SLUGS.items() if s == slug), "Overview")


def _remember_page() -> None:
    st.query_params["page"] = SLUGS[st.session_state["nav"]]


def sidebar(ctx: Ctx) -> str:
    with st.sidebar:
        st.title(":material/shield: NetSentinel")
        if "nav" not in st.session_state:
            st.session_state["nav"] = _initial_page()
        page = st.radio("Page", list(PAGES), key="nav", on_change=_remember_page)
        pending = len(ctx.snap.pending)
        if pending:
            st.warning(f"{pending} threat{'s' if pending > 1 else ''} waiting for review")
        st.divider()
        for name, status in (("loader", ctx.snap.loader_status),
                             ("analyzer", ctx.snap.analyzer_status)):
            live = liveness(name, status)
            st.markdown(f"{STATE_ICONS[live.state]} {md(live.text)}")
        st.divider()
        st.toggle("Auto-refresh", value=ctx.settings.refresh_seconds > 0, key="refresh_on")
        st.number_input("Every (seconds)", 1.0, 3600.0, max(ctx.settings.refresh_seconds, 1.0),
                        step=1.0, key="refresh_every")
        st.caption(f"records: `{ctx.settings.records}`  \nwhitelist: `{ctx.settings.config}`")
        st.caption(md(ctx.who))
        if st.button("Sign out", key="sign_out"):
            ctx.audit("logout", {})
            sign_out()
            st.rerun()
    return page


def main() -> None:
    st.set_page_config(page_title="NetSentinel", page_icon=":material/shield:", layout="wide")
    settings = load_settings()

    def record(who: str, action: str, details: dict, outcome: str) -> None:
        try:
            write_audit(RecordsStore(settings.records), who, action, details, outcome)
        except (StoreError, OSError, InputError) as e:
            st.warning(f"Not recorded in the audit trail: {md(e)}")

    session = require_access(settings.records, record)
    try:
        ctx = Ctx.open(settings, warn=lambda m: flash("warning", m), who=session.who)
    except StoreError as e:
        st.error(f"Cannot open the records directory: {md(e)}")
        st.stop()
    if settings.argv_error:
        st.warning(md(settings.argv_error))
    page = sidebar(ctx)
    if ctx.privilege_note():
        st.info(md(ctx.privilege_note()))
    show_flash()
    notices = st.container()
    PAGES[page](ctx)
    with notices:  # after the page: it read the files whose problems are listed here
        show_notices(ctx)
    if st.session_state.get("refresh_on"):
        # debounce: a click or keystroke pushes the next refresh back.
        st_autorefresh(interval=int(st.session_state["refresh_every"] * 1000), debounce=True,
                       key=REFRESH_KEY)
