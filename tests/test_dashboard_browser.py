"""The dashboard in a real browser: `streamlit run dashboard.py` on a free
loopback port over a temporary records dir holding SEEDED TEST DATA
(tests/dashboard_seed.py), driven by Debian's headless Chromium.

Checks: the overview renders live data (screenshot kept in tests/artifacts/);
Approve on a pending threat puts its ban command in ban_commands.json; the
auto-refresh picks up new data without losing half-typed input.

    .venv/bin/python -m pytest tests/test_dashboard_browser.py -v
    NETSENTINEL_UPDATE_SCREENSHOT=1 ... also refreshes docs/img/dashboard-overview.png
"""

from __future__ import annotations

import json
import re
import threading
from pathlib import Path

import pytest

from netsentinel.testing import dashboard_browser as B
from dashboard_seed import heartbeat, seed
from netsentinel.records import BANNED_IPS, BAN_COMMANDS
from netsentinel.timefmt import utc_now_iso

pytestmark = pytest.mark.skipif(B.missing() is not None, reason=B.missing() or "")

ARTIFACTS = B.ROOT / "tests" / "artifacts"
DOCS_SHOT = B.ROOT / "docs" / "img" / "dashboard-overview.png"
REFRESH = 2.0
TOKEN = "browser-test-token-0123456789"


@pytest.fixture
def seeded(tmp_path):
    records, config = tmp_path / "records", tmp_path / "filter_config.json"
    store = seed(records)
    config.write_text(json.dumps({"trusted_ips": ["192.0.2.0/28"], "trusted_processes": ["chronyd"],
                                  "trusted_ports": [53]}))
    # Stand-in heartbeats (this test process's pid) so loader and analyzer show as running.
    stop = threading.Event()

    def beat():
        while not stop.wait(2.0):
            heartbeat(store)
    t = threading.Thread(target=beat, daemon=True)
    t.start()
    yield records, config, store
    stop.set()
    t.join()


def commands(records: Path) -> list:
    p = records / BAN_COMMANDS
    return json.loads(p.read_text()) if p.exists() and p.read_text().strip() else []


def sidebar_click(page, label: str) -> None:
    B.idle(page)
    page.locator("[data-testid=stSidebar]").get_by_text(label, exact=True).click()


def test_overview_review_approve_and_refresh(seeded, tmp_path):
    records, config, store = seeded
    with B.dashboard_server(records, config, tmp_path / "streamlit.log", refresh=REFRESH,
                            token=TOKEN) as url, B.chromium_page() as page:
        # --- Overview: counters, chart and tables render from the seeded files.
        page.goto(f"{url}/?token={TOKEN}")  # the login URL `make run` prints
        page.get_by_text("Pending", exact=True).wait_for()
        page.locator("[data-testid=stVegaLiteChart], .vega-embed").first.wait_for()
        page.locator("[data-testid=stDataFrame]").nth(1).wait_for()
        page.locator("[data-testid=stSidebar]").get_by_text("loader: running", exact=False).wait_for()
        metrics = page.locator("[data-testid=stMetric]")
        B.wait_until(lambda: metrics.count() == 7)
        assert "112k" in metrics.nth(6).inner_text()
        # Streamlit scrolls inside the app, not the document: a taller window shows more.
        page.set_viewport_size({"width": 1440, "height": 1180})
        page.wait_for_timeout(2500)  # let the chart and tables finish drawing
        ARTIFACTS.mkdir(exist_ok=True)
        shot = ARTIFACTS / "dashboard-overview.png"
        page.screenshot(path=str(shot))
        assert shot.stat().st_size > 20_000
        B.publish_screenshot(shot, DOCS_SHOT)

        # --- Review: Approve the seeded CRITICAL threat; the ban command is written.
        sidebar_click(page, "Review")
        page.wait_for_url(re.compile(r"[?&]page=review"))  # the place survives a reload
        form = page.locator("[data-testid=stForm]", has_text="also trust 203.0.113.50")
        form.wait_for()
        B.idle(page)
        form.get_by_text("Yes, ban permanently", exact=True).click()  # the seeded threat, banned for good
        form.get_by_label("Ban or containment expires after").click()
        page.get_by_role("option", name="permanent").click()
        form.get_by_role("button", name="Approve (ban)").click()
        cmd = B.wait_until(lambda: next((c for c in commands(records)
                                         if c.get("threat_id") == "seedcrit0001"), None))
        assert (cmd["action"], cmd["ip"], cmd["source"]) == ("ban", "203.0.113.50", "review:seedcrit0001")
        assert "ttl_seconds" not in cmd  # permanent, confirmed
        assert "token=" not in page.url
        page.get_by_text("Approved: ban of 203.0.113.50 queued").wait_for()
        page.get_by_text("Ban or containment expires after").first.wait_for()
        page.wait_for_timeout(1000)
        page.screenshot(path=str(ARTIFACTS / "dashboard-review.png"))

        # --- Bans: half-typed input survives auto-refreshes that bring new data.
        sidebar_click(page, "Bans")
        field = page.get_by_label("IP or CIDR")
        field.click()
        field.press_sequentially("198.51.100.77", delay=20)
        bans = json.loads((records / BANNED_IPS).read_text())
        bans["192.0.2.200"] = {"reason": "added while typing", "source": "manual",
                               "banned_at": utc_now_iso(), "expires_at": None, "drops": 0,
                               "last_drop_at": None}
        store.write(BANNED_IPS, bans)
        # The table is drawn on a canvas; its accessible grid cells are hidden but present.
        page.get_by_text("added while typing").wait_for(state="attached",
                                                        timeout=(REFRESH + 10) * 1000)
        page.wait_for_timeout(REFRESH * 1500)  # at least one more refresh
        assert field.input_value() == "198.51.100.77"
        page.get_by_role("button", name="Ban", exact=True).click()
        B.wait_until(lambda: any(c.get("ip") == "198.51.100.77" and c.get("source") == "dashboard"
                                 for c in commands(records)))
        page.screenshot(path=str(ARTIFACTS / "dashboard-bans.png"))
        assert "Traceback" not in (tmp_path / "streamlit.log").read_text()
