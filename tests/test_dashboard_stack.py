"""The Stack page (issue 17) through streamlit.testing.v1.AppTest, on a
stack.json captured from a real lab run (tests/samples/stack.json: SYNs to a
closed port, an nft drop rule, an XDP ban, a connection losing 30% of its
segments)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from streamlit import config as st_config
from streamlit.testing.v1 import AppTest

from test_dashboard_app import env, start  # noqa: F401 (fixture)

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = str(ROOT / "dashboard.py")
SAMPLE = ROOT / "tests" / "samples" / "stack.json"


@pytest.fixture
def records(env):  # test_dashboard_app's: loopback, a known login token, a fresh limiter
    records, _ = env
    records.mkdir(exist_ok=True)
    return records


def stack_page() -> AppTest:
    return start("Stack")  # signed in with the test token


def test_the_stack_page_shows_reasons_sites_and_tcp_health(records):
    shutil.copy(SAMPLE, records / "stack.json")
    sample = json.loads(SAMPLE.read_text())
    at = stack_page()
    assert [h.value for h in at.header] == ["Stack"]
    assert at.metric[0].value == str(sample["totals"]["drops"])
    reasons = at.dataframe[0].value
    assert {"NO_SOCKET", "NETFILTER_DROP", "NOT_SPECIFIED"} <= set(reasons["reason"])
    sites = at.dataframe[1].value
    assert "veth_xdp_rcv_skb+0x27d" in set(sites["location"])
    assert bool(sites[sites["location"] == "veth_xdp_rcv_skb+0x27d"]["xdp"].all())
    tcp = at.dataframe[2].value
    # Sorted by retransmits: the connection that lost segments comes first.
    assert tcp.iloc[0]["retransmits"] == max(c["retransmits"] for c in sample["connections"]) > 0
    assert tcp.iloc[0]["process"] == "python3" and tcp.iloc[0]["closed"]
    at.selectbox(key="stack_tcp_sort").set_value("smoothed RTT").run()
    assert not at.exception
    tcp = at.dataframe[2].value
    assert list(tcp["srtt_ms"]) == sorted(tcp["srtt_ms"], reverse=True)


def test_no_file_says_how_to_get_one(records):
    at = stack_page()
    assert any("stack.json" in i.value for i in at.info)


def test_a_damaged_file_is_a_notice_not_a_crash(records):
    (records / "stack.json").write_text(json.dumps({"history": [5, {"ts": "x"}], "sites": "no",
                                                    "connections": [{"saddr": 1}], "totals": []}))
    at = stack_page()
    assert not at.exception
    assert any("No drops recorded" in i.value for i in at.info)
