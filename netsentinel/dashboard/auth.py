"""The login gate, on every address (loopback included: every local user can
reach 127.0.0.1). Secrets, hashing and the rate limit are in access.py.

Opening /?token=TOKEN logs in (the Jupyter convention) and the token is
removed from the address bar at once; otherwise a form asks for the token or
the password. A session ends after an idle timeout (auto-refreshes are not
activity) and after MAX_SESSION_SECONDS whatever happens."""

from __future__ import annotations

import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

import streamlit as st

from ..llm.env import load_env
from . import access
from .access import LIMITER, PASSWORD_ENV, TOKEN_ENV, AccessError

_SESSION = "_auth"
# The auto-refresh component's value: it changes on a timer run, not on a click.
REFRESH_KEY = "autorefresh"


@dataclass(frozen=True)
class Session:
    sid: str
    how: str       # token | password
    client: str    # the browser's address, "local" on loopback

    @property
    def who(self) -> str:
        """For the audit trail: which login did it, from where, in which process."""
        return f"dashboard session {self.sid} ({self.how}, {self.client}, uid {os.geteuid()})"


def configured_password() -> str | None:
    """From the environment or .env, else Streamlit secrets."""
    load_env()
    pw = os.environ.get(PASSWORD_ENV)
    if pw:
        return pw
    try:
        pw = st.secrets.get(PASSWORD_ENV)
    except Exception:  # no secrets.toml, or a broken one: treat as unset
        pw = None
    return str(pw) if pw else None


def client_address() -> str:
    """The browser's address; "local" on loopback (every local user shares
    that budget) or when Streamlit cannot tell."""
    ip = st.context.ip_address
    return ip if isinstance(ip, str) and ip else "local"


def _current(now: float) -> Session | None:
    s = st.session_state.get(_SESSION)
    if not s:
        return None
    idle = access.idle_seconds()
    if now - s["seen"] > idle or now - s["since"] > access.MAX_SESSION_SECONDS:
        st.session_state.pop(_SESSION, None)
        st.session_state["_auth_expired"] = True
        return None
    tick = st.session_state.get(REFRESH_KEY)
    if tick == s.get("tick"):  # not a timer run: the person did something
        s["seen"] = now
    s["tick"] = tick
    return s["session"]


def _login(how: str, client: str, audit) -> None:
    now = time.time()
    session = Session(secrets.token_hex(4), how, client)
    LIMITER.succeeded(client)
    st.session_state[_SESSION] = {"session": session, "since": now, "seen": now,
                                  "tick": st.session_state.get(REFRESH_KEY)}
    st.session_state.pop("_auth_expired", None)
    audit(session.who, "login", {"how": how}, "ok")


def _try(typed: str, token: str | None, password: str | None, client: str, audit) -> str | None:
    """Check one attempt (rate-limited); None on success, else why not."""
    wait = LIMITER.locked_for(client)
    if wait:
        return f"Too many failed logins: try again in {wait:.0f} s."
    if token and access.token_matches(typed, token):
        _login("token", client, audit)
        return None
    if password and access.password_matches(typed, password):
        _login("password", client, audit)
        return None
    LIMITER.failed(client)
    wait = LIMITER.locked_for(client)
    if wait:
        audit(f"client {client}", "login", {}, f"locked out for {wait:.0f} s")
        return f"Wrong token or password. Too many failed logins: try again in {wait:.0f} s."
    return (f"Wrong token or password ({LIMITER.failures(client)} of {LIMITER.per_client} tries "
            "before a lockout).")


def require_access(records: Path, audit) -> Session:
    """The signed-in session; otherwise render the login (or why nobody can
    log in) and stop the script run. audit(who, action, details, outcome)
    records logins and lockouts."""
    now = time.time()
    session = _current(now)
    if session is not None:
        if "token" in st.query_params:  # signed in already: just keep it out of the address bar
            del st.query_params["token"]
        return session
    client = client_address()
    password = configured_password()
    try:
        token = access.configured_token(records)
        token_error = None
    except AccessError as e:
        token, token_error = None, str(e)
    st.title("NetSentinel")
    if token is None and password is None:
        st.error(f"Nobody can sign in: {token_error}. Set {TOKEN_ENV} or {PASSWORD_ENV}.")
        st.stop()
    url_token = st.query_params.get("token")
    if url_token is not None:
        del st.query_params["token"]  # never left in the address bar or its history entry
        error = _try(url_token, token, password, client, audit)
        if error is None:
            st.rerun()
        st.error(error)
    elif st.session_state.pop("_auth_expired", False):
        st.info("Your session expired; sign in again.")
    with st.form("login"):
        st.text_input("Token or password", type="password", key="login_password",
                      help="the token is shown by `sudo make run` (or "
                           "`python -m netsentinel.dashboard.access token`)")
        submitted = st.form_submit_button("Sign in", key="login_submit")
    if submitted:
        typed = st.session_state.pop("login_password", "") or ""
        error = _try(typed, token, password, client, audit)
        if error is None:
            st.rerun()
        st.error(error)
    st.stop()
    raise AssertionError("unreachable")  # st.stop raises


def sign_out() -> None:
    st.session_state.pop(_SESSION, None)
