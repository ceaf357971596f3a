"""The Stack page (issue 17) through streamlit.testing.v1.AppTest, on a
stack.json captured from real lab runs (tests/samples/stack.json: SYNs to a
closed port, an nft drop rule, an XDP ban, a connection losing 30% of its
segments; then, from tests/test_kernel_stack_path.py, accepted connections
and the paths of their flows and of IPv6 datagrams with extension headers
to a closed port)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from streamlit import config as st_config
from streamlit.testing.v1 import AppTest

from analyzer_support import BASE_EVENT, lines, run_analyzer
from netsentinel.dashboard.ui import md
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
    (records / "stack.json").write_text(json.dumps({
        "history": [5, {"ts": "x"}], "sites": "no", "connections": [{"saddr": 1}], "totals": [],
        "drop_flows": [{"src": [1], "dst": {}, "dport": [], "reason": "SOCKET_RCVBUFF", "count": "x"}],
        "paths": [{"src": 1, "sport": [], "dst": None, "dport": 2, "nodes": {"x\"y": [1]}, "edges": [{"from": [],
                   "to": {}, "count": None, "median_us": "?"}]}]}))
    at = stack_page()
    assert not at.exception
    assert any("No drops recorded" in i.value for i in at.info)


def test_an_accepted_connection_shows_its_process(records):
    shutil.copy(SAMPLE, records / "stack.json")
    sample = json.loads(SAMPLE.read_text())
    # The older capture's inbound row predates the accept() hook: no process.
    accepted = [c for c in sample["connections"] if c["direction"] == "inbound" and c["pid"]]
    assert accepted
    tcp = stack_page().dataframe[2].value
    rows = tcp[tcp["pid"].isin([c["pid"] for c in accepted])]
    assert len(rows) == len(accepted)
    assert set(rows["direction"]) == {"inbound"} and set(rows["process"]) == {"python3"}


def test_a_full_receive_queue_is_shown_for_its_socket(records):
    shutil.copy(SAMPLE, records / "stack.json")
    full = json.loads(SAMPLE.read_text())["full_queues"]
    at = stack_page()
    table = next(d.value for d in at.dataframe if "socket" in d.value.columns)
    assert [(r["socket"], r["protocol"], r["process"], r["drops"], r["memory / limit"]) for _, r in table.iterrows()] \
        == [(f"{q['local']}:{q['port']}", "UDP", f"python3 [{q['pid']}]", q["drops"],
             f"{q['rmem_alloc']} / {q['rcvbuf']} B") for q in full]


def test_without_per_socket_rows_full_queues_come_from_the_drop_flows(records):
    """A stack.json from a loader that cannot name the socket (a kernel
    without kfree_skb's rx_sk): the full-queue drop flows stand in."""
    doc = json.loads(SAMPLE.read_text())
    doc["full_queues"] = []
    (records / "stack.json").write_text(json.dumps(doc))
    full = [d for d in doc["drop_flows"] if d["reason"] == "SOCKET_RCVBUFF"]
    at = stack_page()
    table = next(d.value for d in at.dataframe if "socket" in d.value.columns)
    assert [(r["socket"], r["protocol"], r["sender"], r["drops"]) for _, r in table.iterrows()] == \
        [(f"{d['dst']}:{d['dport']}", "UDP", d["src"], d["count"]) for d in full]


def test_the_path_of_a_chosen_flow_is_drawn(records):
    shutil.copy(SAMPLE, records / "stack.json")
    paths = json.loads(SAMPLE.read_text())["paths"]
    at = stack_page()
    assert not at.exception
    (dot,) = [e.proto.spec for e in at.get("graphviz_chart")]
    first = paths[0]   # the busiest flow is chosen first
    assert f"{first['src']}:{first['sport']} → {first['dst']}:{first['dport']}" in dot
    # A TCP flow of the lab: received, taken by TCP, read by the process.
    i = next(i for i, p in enumerate(paths) if p["proto"] == 6 and p["dst"] == first["dst"])
    at.selectbox(key="stack_path_flow").set_value(i).run()
    edges = next(d.value for d in at.dataframe if "median" in d.value.columns)
    assert sum(edges["packets"]) == sum(e["count"] for e in paths[i]["edges"])
    assert {"receive", "tcp", "socket"} <= set(edges["to"])
    assert '"receive" -> "tcp"' in at.get("graphviz_chart")[0].proto.spec
    # A drop ends a path in its own, named node: the IPv6 datagrams to a closed port.
    i = next(i for i, p in enumerate(paths) if p["family"] == "ipv6")
    at.selectbox(key="stack_path_flow").set_value(i).run()
    assert not at.exception
    (dot,) = [e.proto.spec for e in at.get("graphviz_chart")]
    assert '"receive" -> "dropped NO_SOCKET" [label="12\\nmedian' in dot, dot
    assert f"{paths[i]['src']}:{paths[i]['sport']}" in dot


def test_a_flow_into_a_full_socket_names_the_socket_and_its_process(records):
    shutil.copy(SAMPLE, records / "stack.json")
    doc = json.loads(SAMPLE.read_text())
    (q,) = doc["full_queues"]
    i = next(i for i, p in enumerate(doc["paths"]) if (p["dst"], p["dport"]) == (q["local"], q["port"]))
    at = stack_page()
    at.selectbox(key="stack_path_flow").set_value(i).run()
    assert not at.exception
    assert '"receive" -> "dropped SOCKET_RCVBUFF"' in at.get("graphviz_chart")[0].proto.spec
    assert [w.value for w in at.warning] == [md(
        f"Its receiving socket's queue was full: {q['drops']} packets dropped, held by python3 [{q['pid']}] "
        f"(memory {q['rmem_alloc']} of {q['rcvbuf']} bytes).")]
    # Another flow, to a socket with room: no such warning.
    at.selectbox(key="stack_path_flow").set_value(next(i for i, p in enumerate(doc["paths"]) if p["proto"] == 6)).run()
    assert not at.warning
    # A process names itself: a link for a name stays text.
    q["comm"] = "[x](//e.io)"
    (records / "stack.json").write_text(json.dumps(doc))
    at = stack_page()
    at.selectbox(key="stack_path_flow").set_value(i).run()
    (w,) = at.warning
    assert "held by \\[x\\]\\(//e\\.io\\)" in w.value and "[x](" not in w.value


def test_history_following_a_host_shows_its_drops_and_tcp_health(records, tmp_path):
    shutil.copy(SAMPLE, records / "stack.json")
    sample = json.loads(SAMPLE.read_text())
    peer = next(d["src"] for d in sample["drop_flows"] if d["dport"] == 7)   # the lab peer's SYN scan
    r = run_analyzer(tmp_path, ["--backend", "rules"], lines([BASE_EVENT]), records=records)
    assert r.returncode == 0, r.stderr
    at = start("History")
    at.selectbox(key="hist_what").set_value("address").run()
    at.text_input(key="hist_follow").set_value(peer).run()
    assert not at.exception
    frames = {tuple(d.value.columns): d.value for d in at.dataframe}
    tcp = next(v for k, v in frames.items() if "retransmits" in k)
    accepted = [c for c in sample["connections"] if c["daddr"] == peer and c["direction"] == "inbound"]
    assert accepted and set(tcp[tcp["direction"] == "inbound"]["pid"]) == {c["pid"] for c in accepted}
    drops = next(v for k, v in frames.items() if "drop reason" in k)
    scan = drops[drops["dport"] == 7].iloc[0]
    assert (scan["drop reason"], scan["src"], scan["count"]) == ("NO_SOCKET", peer, 10)
    assert all(peer in (row["src"], row["dst"]) for _, row in drops.iterrows())
    assert any(c.value.startswith("In the stack") for c in at.caption)
