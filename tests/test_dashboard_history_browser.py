"""The History page in a real browser (Debian's headless Chromium through
playwright) over an event store holding SEEDED TEST DATA: the page opens
from its URL, following one process narrows the count to what the store
holds for it and shows the investigation summary, and the export toggle
prepares both downloads."""

from __future__ import annotations

import csv
import io
import re
import time
from pathlib import Path

import pytest

from netsentinel.eventstore import Query, open_store, resolve_dsn
from netsentinel.store import RecordsStore
from netsentinel.testing import dashboard_browser as B
from test_dashboard_browser import ARTIFACTS, TOKEN, seeded  # noqa: F401 (seeded is a fixture)

pytestmark = pytest.mark.skipif(B.missing() is not None, reason=B.missing() or "")


def _stored(records, **filters) -> int:
    db = open_store(resolve_dsn(None, RecordsStore(records)), readonly=True)
    try:
        return db.count(Query(since=time.time() - 86400, **filters))
    finally:
        db.close()


def test_history_follows_a_process_in_a_browser(seeded, tmp_path):
    records, config, _ = seeded
    everything, smb = _stored(records), _stored(records, process="smbclient")
    assert 0 < smb < everything
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with B.dashboard_server(records, config, tmp_path / "streamlit.log", refresh=0,
                            token=TOKEN) as url, B.chromium_page() as page:
        page.goto(f"{url}/?token={TOKEN}&page=history")
        page.get_by_text(re.compile(rf"^{everything} events, page 1 of ")).wait_for()
        page.locator("[data-testid=stVegaLiteChart], .vega-embed").first.wait_for()  # the timeline
        field = page.get_by_label("Name, path or address")
        field.fill("smbclient")
        field.press("Enter")
        page.get_by_text(re.compile(rf"^{smb} events, page 1 of 1")).wait_for()
        page.get_by_text("destinations", exact=True).wait_for()  # the investigation summary
        B.idle(page)
        page.get_by_text("Prepare export (up to 10,000 rows)").click()
        page.get_by_role("button", name="JSON lines", exact=True).wait_for()
        page.screenshot(path=str(ARTIFACTS / "dashboard-history.png"))
        with page.expect_download() as dl:
            page.get_by_role("button", name="CSV", exact=True).click()
        rows = list(csv.DictReader(io.StringIO(Path(dl.value.path()).read_text())))
    assert len(rows) == smb and {r["comm"] for r in rows} == {"smbclient"}
    assert "Traceback" not in (tmp_path / "streamlit.log").read_text()
