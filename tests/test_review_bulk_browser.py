"""Review at scale in a real browser (Debian's Chromium through playwright):
100,000 suspicious destinations from one scanner fold into a bounded queue
(20 threats + 1 aggregate, netsentinel/threats.py), the Review page renders
it as one table, and ticking rows + "Approve selected" bans exactly those
targets. As `make run` runs it: the dashboard as the unprivileged
`netsentinel` user, the approvals carried out by the real analyzer (root)
through records/dashboard_commands.d/."""

from __future__ import annotations

import json
import os
import pwd
import subprocess
import sys

import pytest

from netsentinel import audit, dropdir, threats
from netsentinel.dashboard.review import ordered
from netsentinel.records import ANALYZER_STATUS, BAN_COMMANDS
from netsentinel.store import RecordsStore
from netsentinel.testing import dashboard_browser as B
from netsentinel.testing.lab import wait_until

pytestmark = pytest.mark.skipif(B.missing() is not None, reason=B.missing() or "")

TOKEN = "bulk-review-token-0123456789abcdef"
USER = "netsentinel"  # the dashboard's own user (scripts/install.sh makes it)
DESTINATIONS = 100_000
# The data grid's geometry (glide-data-grid defaults in Streamlit): the
# header row, then rows of ROW px; the tick boxes sit in the first column.
HEADER, ROW, MARKER_X = 35, 35, 20


def scan_threat(i: int) -> dict:
    ip = f"10.{202}.{(i >> 8) & 255}.{i & 255}" if i < 65536 else f"172.{16 + (i >> 16)}.{(i >> 8) & 255}.{i & 255}"
    return {"level": "HIGH", "category": "port_scan", "confidence": 0.9, "target": ip,
            "reason": f"scanner reached {ip}", "recommended_action": "ban",
            "verdict_source": "rules", "backend": "rules", "rule_level": "HIGH",
            "rule_confidence": 0.9, "dedupe_key": f"dst|{ip}",
            "event": {"type": "connection", "comm": "scanner", "exe": "/tmp/scanner", "uid": 1000,
                      "pid": 4242, "daddr": ip, "dport": 22}}


def tick(page, rows: list[int]) -> None:
    """Tick these rows of the Review table (its first data grid)."""
    grid = page.locator("[data-testid=stDataFrame]").first
    grid.wait_for()
    B.idle(page)
    box = grid.bounding_box()
    for i in rows:
        page.mouse.click(box["x"] + MARKER_X, box["y"] + HEADER + ROW * i + ROW / 2)
        B.idle(page)
    page.get_by_text(f"{len(rows)} selected").wait_for()


def test_review_renders_100k_destinations_and_a_multi_select_approve_goes_through(tmp_path, shared_dir):
    if subprocess.run(["id", "-u", USER], capture_output=True).returncode:
        pytest.skip(f"no user {USER}: run scripts/install.sh (it creates the dashboard's user)")
    records, config = shared_dir / "records", shared_dir / "filter_config.json"
    store = RecordsStore(records)
    config.write_text("{}")
    threats.add_or_merge_many(store, [(scan_threat(i), 1) for i in range(DESTINATIONS)])
    queue = threats.list_threats(store, "pending")
    assert len(queue) == threats.PER_ACTOR_CAP + 1  # bounded: 20 + the aggregate
    assert sum(t["count"] for t in queue) == DESTINATIONS
    rows = ordered(queue)
    picks = [i for i, t in enumerate(rows) if not t.get("aggregate")][:3]
    want = {rows[i]["target"] for i in picks}
    dropdir.ensure(records, BAN_COMMANDS)
    env = {k: v for k, v in os.environ.items() if not k.startswith("NETSENTINEL_")}
    analyzer = subprocess.Popen([sys.executable, str(B.ROOT / "llm_analyzer.py"), "--records",
                                 str(records), "--config", str(config), "--backend", "rules"],
                                stdin=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=tmp_path)
    try:
        wait_until(lambda: analyzer.poll() is not None or (store.path(ANALYZER_STATUS).exists() and
                   json.loads(store.path(ANALYZER_STATUS).read_text()).get("pid") == analyzer.pid),
                   60, what="the analyzer running")
        assert analyzer.poll() is None
        with B.dashboard_server(records, config, tmp_path / "streamlit.log", refresh=0, token=TOKEN,
                                user=USER) as url, B.chromium_page(height=1400) as page:
            page.goto(f"{url}/?token={TOKEN}&page=review")
            page.get_by_text(f"{len(queue)} of {len(queue)} pending shown").wait_for()
            page.get_by_text("Runs as uid").wait_for()  # unprivileged, as by default
            # The filter finds the aggregate (its target column says how many it folds).
            B.enter_text(page, "Filter", f"many: {DESTINATIONS - threats.PER_ACTOR_CAP} sightings",
                         f"1 of {len(queue)} pending shown")
            B.enter_text(page, "Filter", "", f"{len(queue)} of {len(queue)} pending shown")
            tick(page, picks)
            page.get_by_role("button", name="Approve selected").click()
            page.get_by_text(f"approve: {len(picks)} of {len(picks)} done").wait_for()
            # The decided rows left; no tick moved onto the threats that took their places.
            page.get_by_text(f"{len(queue) - len(picks)} of {len(queue) - len(picks)} pending shown").wait_for()
            page.get_by_text("0 selected").wait_for()
            B.idle(page)
            page.screenshot(path=str(tmp_path / "review-bulk.png"))
    finally:
        analyzer.stdin.close()
        analyzer.wait(timeout=60)
    bans = json.loads(store.path(BAN_COMMANDS).read_text())
    assert {c["ip"] for c in bans} == want and all(c["ttl_seconds"] == 86400 for c in bans)
    decided = {t["target"]: t for t in threats.list_threats(store) if t["status"] == "approved"}
    assert set(decided) == want
    uid = pwd.getpwnam(USER).pw_uid
    trail = [e for e in audit.read(store)[0] if e["action"] == "approve"]
    assert len(trail) == len(picks) and all(e["who"].startswith(f"uid {uid} ({USER})") for e in trail)
    assert "Traceback" not in (tmp_path / "streamlit.log").read_text()
    assert "Traceback" not in analyzer.stderr.read().decode()


def test_root_dashboard_rejects_selected_and_trusts_their_targets(tmp_path):
    """DASHBOARD_USER=root: the same table, the dashboard writes records/ itself."""
    records, config = tmp_path / "records", tmp_path / "filter_config.json"
    store = RecordsStore(records)
    config.write_text("{}")
    threats.add_or_merge_many(store, [(scan_threat(i), 1) for i in range(40)])
    rows = ordered(threats.list_threats(store, "pending"))
    picks = [i for i, t in enumerate(rows) if not t.get("aggregate")][:2]
    want = {rows[i]["target"] for i in picks}
    with B.dashboard_server(records, config, tmp_path / "streamlit.log", refresh=0,
                            token=TOKEN) as url, B.chromium_page(height=1400) as page:
        page.goto(f"{url}/?token={TOKEN}&page=review")
        page.get_by_text(f"{len(rows)} of {len(rows)} pending shown").wait_for()
        tick(page, picks)
        page.get_by_text("On reject, also trust each target").click()
        page.get_by_role("button", name="Reject selected").click()
        page.get_by_text(f"reject: {len(picks)} of {len(picks)} done").wait_for()
    rejected = {t["target"]: t for t in threats.list_threats(store) if t["status"] == "rejected"}
    assert set(rejected) == want and all(t["decided_by"] == "dashboard" for t in rejected.values())
    assert set(json.loads(config.read_text())["trusted_ips"]) == want
    assert not store.path(BAN_COMMANDS).exists()
    trail = [e for e in audit.read(store)[0] if e["action"] == "reject"]
    assert len(trail) == 2 and all(e["who"].startswith("dashboard session") for e in trail)
