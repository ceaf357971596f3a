"""The password gate. On loopback (the default, .streamlit/config.toml) the
dashboard is open to local users only; bound to any other address it can
reach the firewall from the network, so a password is required and nothing
is shown without one."""

from __future__ import annotations

import hmac
import ipaddress
import os

import streamlit as st

from ..llm.env import load_env

PASSWORD_ENV = "NETSENTINEL_DASHBOARD_PASSWORD"


def is_loopback(address: str | None) -> bool:
    """None/"" means Streamlit listens on every interface: not loopback."""
    if not address:
        return False
    if address.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(address.strip("[] ")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


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


def require_access() -> None:
    """Return when the user may see the dashboard; otherwise render the
    login (or the refusal) and stop the script run."""
    address = st.get_option("server.address")
    if is_loopback(address):
        return
    if st.session_state.get("_auth_ok"):
        return
    password = configured_password()
    where = address or "all interfaces"
    st.title("NetSentinel")
    if not password:
        st.error(f"The dashboard is listening on {where}, not only on loopback, and no password "
                 f"is set. Set {PASSWORD_ENV} in .env (or in Streamlit secrets), or run it on "
                 "127.0.0.1.")
        st.stop()
    with st.form("login"):
        typed = st.text_input("Password", type="password", key="login_password")
        submitted = st.form_submit_button("Sign in", key="login_submit")
    if submitted:
        if hmac.compare_digest(typed.encode(), password.encode()):
            st.session_state["_auth_ok"] = True
            st.session_state.pop("login_password", None)
            st.rerun()
        st.error("Wrong password.")
    st.stop()
