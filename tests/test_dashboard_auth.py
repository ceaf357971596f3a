"""Who may use the dashboard (AppTest): sign-in on every address with the
token (URL or form) or the password/hash, the process-wide login rate limit,
idle expiry; confirmations for dangerous actions; the audit trail; and that
"Test connection" only ever calls the saved endpoint (an API key never goes
to a host typed in the page)."""

from __future__ import annotations

import json
import os
import stat

import pytest
from streamlit import config as st_config
from streamlit.testing.v1 import AppTest

from dashboard_seed import seed
from netsentinel import audit
from netsentinel.dashboard import access
from netsentinel.records import BAN_COMMANDS, LLM_CONFIG
from netsentinel.store import RecordsStore
from netsentinel.testing.dashboard_browser import Listener
from test_dashboard_app import TOKEN, env, read, start, texts  # noqa: F401  (env: fixture)


def signed_in(at: AppTest) -> bool:
    return bool(at.radio) and at.radio(key="nav").value is not None


def login(at: AppTest, typed: str) -> AppTest:
    at.text_input(key="login_password").input(typed)
    return at.button(key="login_submit").click().run()


# ------------------------------------------------------------------ sign-in
@pytest.mark.parametrize("address", ["127.0.0.1", "0.0.0.0"])
def test_nothing_without_the_token_on_any_address(env, address):
    records, _ = env
    seed(records)
    st_config.set_option("server.address", address)
    at = start(token=None)
    assert not at.exception
    assert not signed_in(at) and not at.metric and not at.dataframe
    assert [t.key for t in at.text_input] == ["login_password"]
    login(at, "not-the-token")
    assert "Wrong token or password" in texts(at, "error") and not signed_in(at)
    login(at, TOKEN)
    assert signed_in(at) and at.radio(key="nav").value == "Overview"


def test_token_in_the_url_logs_in_and_leaves_the_address_bar(env):
    at = start()
    assert signed_in(at) and not at.exception
    assert "token" not in at.query_params
    wrong = start(token="x" * 30)
    assert not signed_in(wrong) and "Wrong token" in texts(wrong, "error")
    assert "token" not in wrong.query_params


def test_token_file_is_made_private_at_first_start(env, monkeypatch):
    records, _ = env
    monkeypatch.delenv(access.TOKEN_ENV)
    at = start(token=None)
    path = records / access.TOKEN_FILE
    st = path.stat()
    assert stat.S_IMODE(st.st_mode) == 0o600 and st.st_uid == os.geteuid()
    token = path.read_text().strip()
    assert len(token) >= 32
    login(at, token)
    assert signed_in(at)
    assert access.configured_token(records) == token  # the next start uses the same one
    path.chmod(0o644)  # readable by others: useless as a secret
    with pytest.raises(access.AccessError, match="not a private file"):
        access.configured_token(records)
    at = start(token=None)
    assert "Nobody can sign in" in texts(at, "error") and not at.text_input


def test_password_and_password_hash(env, monkeypatch):
    monkeypatch.setenv(access.PASSWORD_ENV, "correct horse battery")
    at = start(token=None)
    login(at, "correct horse")
    assert not signed_in(at)
    login(at, "correct horse battery")
    assert signed_in(at)
    monkeypatch.setenv(access.PASSWORD_ENV, access.hash_password("staple 42"))
    at = start(token=None)
    login(at, access.hash_password("staple 42"))  # the hash itself is not the password
    assert not signed_in(at)
    login(at, "staple 42")
    assert signed_in(at)


def test_failed_logins_lock_out_across_sessions(env):
    records, _ = env
    at = start(token=None)
    for i in range(access.LIMITER.per_client):
        login(at, f"guess-number-{i:02d}-xxxxxxxx")
    assert "try again in" in texts(at, "error")
    login(at, TOKEN)  # even the right token waits out the lockout
    assert not signed_in(at) and "Too many failed logins" in texts(at, "error")
    fresh = start()  # a page reload (a new session, token in the URL): still locked
    assert not signed_in(fresh) and "Too many failed logins" in texts(fresh, "error")
    entries, _ = audit.read(RecordsStore(records))
    assert any(e["action"] == "login" and e["outcome"].startswith("locked out") for e in entries)
    access.LIMITER.reset()
    assert signed_in(start())


def test_lockout_grows_and_has_a_global_limit():
    lim = access.LoginLimiter(per_client=3, overall=5, lock=60, max_lock=600)
    for _ in range(3):
        lim.failed("a", now=0)
    assert lim.locked_for("a", now=1) == 59 and lim.locked_for("b", now=1) == 0
    for _ in range(3):
        lim.failed("a", now=100)
    assert lim.locked_for("a", now=100) == 120  # doubled
    lim = access.LoginLimiter(per_client=3, overall=5, lock=60)
    for c in "abcde":  # one failure each from 5 addresses: everyone waits
        assert lim.locked_for("zzz", now=0) == 0
        lim.failed(c, now=0)
    assert lim.locked_for("zzz", now=1) == 59


def test_idle_session_expires(env):
    at = start()
    assert signed_in(at)
    at.session_state["_auth"]["seen"] -= access.idle_seconds() + 1
    at.run()
    assert not signed_in(at) and "session expired" in texts(at, "info")


# ------------------------------------------------------- dangerous actions
def test_permanent_ban_needs_confirmation(env):
    records, _ = env
    at = start("Bans")
    at.text_input(key="ban_ip").input("203.0.113.99")
    at.selectbox(key="ban_ttl").set_value("permanent")
    at.button(key="ban_submit").click().run()
    assert "needs confirmation" in texts(at, "error")
    assert not (records / BAN_COMMANDS).exists()
    at.checkbox(key="ban_permanent_ok").check()
    at.button(key="ban_submit").click().run()
    assert [c["ip"] for c in read(records / BAN_COMMANDS)] == ["203.0.113.99"]
    assert "ttl_seconds" not in read(records / BAN_COMMANDS)[0]


def test_default_ban_expires(env):
    records, _ = env
    at = start("Bans")
    at.text_input(key="ban_ip").input("203.0.113.98")
    at.button(key="ban_submit").click().run()
    assert read(records / BAN_COMMANDS)[0]["ttl_seconds"] == 86400


def test_broad_whitelist_needs_confirmation(env):
    _, cfg = env
    at = start("Whitelist")
    at.selectbox(key="wl_kind").set_value("ip")
    at.text_input(key="wl_value").input("10.20.0.0/16")
    at.button(key="wl_add").click().run()
    assert "10.20.0.0/16 hides every connection" in texts(at, "error")
    assert "10.20.0.0/16" not in json.dumps(read(cfg, {}))
    at.checkbox(key="wl_broad_ok").check()
    at.button(key="wl_add").click().run()
    assert "10.20.0.0/16" in read(cfg)["trusted_ips"]
    at.text_input(key="wl_value").input("192.0.2.7")  # one address: no question asked
    at.button(key="wl_add").click().run()
    assert "192.0.2.7" in read(cfg)["trusted_ips"]
    raw = read(cfg)
    raw["trusted_ips"].append("172.16.0.0/12")
    at.text_area(key="wl_raw").input(json.dumps(raw))
    at.button(key="wl_raw_save").click().run()
    assert "172.16.0.0/12 hides every connection" in texts(at, "error")
    assert "172.16.0.0/12" not in read(cfg)["trusted_ips"]


# ------------------------------------------------------------ audit trail
def test_every_write_is_audited_and_shown(env):
    records, cfg = env
    seed(records)
    at = start("Bans")
    at.text_input(key="ban_ip").input("203.0.113.99")
    at.button(key="ban_submit").click().run()
    at.text_input(key="ban_ip").input("127.0.0.2")
    at.button(key="ban_submit").click().run()
    at.selectbox(key="unban_ip").set_value("203.0.113.7").run()
    at.button(key="unban_submit").click().run()
    at.radio(key="nav").set_value("Review").run()
    at.button(key="approve_seedcrit0001").click().run()
    at.button(key="reject_seedhigh0002").click().run()
    at.radio(key="nav").set_value("Whitelist").run()
    at.text_input(key="wl_value").input("192.0.2.99")
    at.button(key="wl_add").click().run()
    at.radio(key="nav").set_value("LLM settings").run()
    at.number_input(key="llm_scan_ports").set_value(12)
    at.button(key="llm_save").click().run()
    assert not at.exception
    entries, bad = audit.read(RecordsStore(records))
    assert bad == 0
    got = [(e["action"], e["outcome"].split(":")[0]) for e in entries]
    assert got == [("login", "ok"), ("ban", "ok"), ("ban", "refused"), ("unban", "ok"),
                   ("approve", "ok"), ("reject", "ok"), ("whitelist_add", "ok"),
                   ("llm_settings", "ok")]
    sessions = {e["who"] for e in entries}
    assert len(sessions) == 1 and sessions.pop().startswith("dashboard session ")
    assert entries[1]["details"]["ip"] == "203.0.113.99" and entries[1]["ts"]
    assert entries[4]["details"]["threat"] == "seedcrit0001"
    at.radio(key="nav").set_value("Audit").run()
    table = at.dataframe[0].value
    assert list(table["action"])[:3] == ["llm_settings", "whitelist_add", "reject"]


# ------------------------------------------------------ test connection
def test_test_connection_never_sends_the_key_to_a_typed_host(env, monkeypatch):
    records, _ = env
    key = "0123456789abcdef0123456789abcdef.SeCrEtKeY42"
    monkeypatch.setenv("ZHIPUAI_API_KEY", key)
    with Listener() as configured, Listener() as attacker:
        RecordsStore(records).write(LLM_CONFIG, {"backend": "zhipuai", "host": configured.url})
        at = start("LLM settings")
        at.text_input(key="llm_host").input(attacker.url)  # typed, not saved
        at.button(key="llm_test").click().run()
        assert not at.exception
        assert attacker.seen() == []
        assert [r["headers"].get("Authorization") for r in configured.seen()] == [f"Bearer {key}"]
        # Saving the typed host needs the confirmation; without it nothing changes.
        at.text_input(key="llm_host").input(attacker.url)
        at.button(key="llm_save").click().run()
        assert "sends the API key there" in texts(at, "error")
        assert read(records / LLM_CONFIG)["host"] == configured.url
        assert attacker.seen() == []


def test_test_connection_refuses_a_settings_file_root_does_not_own(env, monkeypatch):
    records, _ = env
    monkeypatch.setenv("ZHIPUAI_API_KEY", "0123456789abcdef0123456789abcdef.k")
    with Listener() as listener:
        RecordsStore(records).write(LLM_CONFIG, {"backend": "zhipuai", "host": listener.url})
        os.chown(records / LLM_CONFIG, 65534, 65534)
        at = start("LLM settings")
        at.button(key="llm_test").click().run()
        assert "belongs to uid 65534" in texts(at, "error")
        assert listener.seen() == []


def test_audit_trail_reads_only_its_end_and_skips_bad_lines(records):
    for i in range(3000):
        audit.record(records, "cli uid 0", "ban", {"ip": f"203.0.113.{i % 250}", "n": i})
    with open(records.path(audit.AUDIT), "a") as f:
        f.write("not json\n[1]\n")
    audit.record(records, "cli uid 0", "unban", {"ip": "203.0.113.1"})
    entries, bad = audit.read(records, limit=50, max_bytes=4096)
    assert bad == 2 and entries[-1]["action"] == "unban"
    assert 0 < len(entries) < 50 and entries[0]["details"]["n"] > 2900  # only the tail was read
    long = audit.record(records, "x", "whitelist_edit", {"json": "x" * 10_000})
    assert len(long["details"]["json"]) <= audit.MAX_DETAIL_CHARS + 1
