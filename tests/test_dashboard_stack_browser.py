"""The Stack page in a real browser (`streamlit run dashboard.py`, headless
Chromium) over a stack.json captured from the lab (tests/samples/stack.json):
the drop-reason chart draws, the dropping locations and the TCP health row
of the connection that lost segments are on the page, and the path diagram
of the busiest flow draws as an SVG with its hooks and edges."""

from __future__ import annotations

import json
import shutil

import pytest

from netsentinel.testing import dashboard_browser as B

pytestmark = pytest.mark.skipif(B.missing() is not None, reason=B.missing() or "")

SAMPLE = B.ROOT / "tests" / "samples" / "stack.json"
ARTIFACTS = B.ROOT / "tests" / "artifacts"


def test_stack_page_in_a_browser(tmp_path):
    records, config = tmp_path / "records", tmp_path / "filter_config.json"
    records.mkdir()
    config.write_text("{}")
    shutil.copy(SAMPLE, records / "stack.json")
    token = "stack-browser-token-0123456789"
    with B.dashboard_server(records, config, tmp_path / "streamlit.log", refresh=0,
                            token=token) as url, B.chromium_page() as page:
        page.goto(f"{url}/?token={token}&page=stack")  # the login URL, on the Stack page
        page.get_by_role("heading", name="Stack").wait_for()
        page.get_by_text("Drop reasons over time").wait_for()
        page.locator("[data-testid=stVegaLiteChart], .vega-embed").first.wait_for()
        tables = page.locator("[data-testid=stDataFrame]")
        B.wait_until(lambda: tables.count() == 5)
        # Tables draw on a canvas; their accessible grid cells are hidden but present.
        (full,) = json.loads(SAMPLE.read_text())["full_queues"]   # a socket with a full queue, its process
        for text in ("NETFILTER_DROP", "nft_do_chain+0x3e8", "veth_xdp_rcv_skb+0x27d",
                     "10.221.227.2:57561", f"{full['local']}:{full['port']}", f"python3 [{full['pid']}]"):
            page.get_by_text(text, exact=True).first.wait_for(state="attached")
        # The path diagram: graphviz rendered in the page, hooks as nodes, counts on edges.
        first = json.loads(SAMPLE.read_text())["paths"][0]
        page.get_by_text("Path of a flow").wait_for()
        svg = page.locator("[data-testid=stGraphVizChart] svg")
        svg.wait_for()
        proto = {6: "TCP", 17: "UDP"}[first["proto"]]
        flow = f"{proto} {first['src']}:{first['sport']} → {first['dst']}:{first['dport']} ({first['packets']} packets)"
        hooks = {"receive": "netif_receive_skb", "tcp": "tcp_probe", "socket": "skb_copy_datagram_iovec",
                 "consumed": "consume_skb"}
        for label in [flow] + [hooks.get(n) or n.split(" ", 1)[1] for n in first["nodes"]]:
            svg.get_by_text(label, exact=True).first.wait_for()
        svg.get_by_text(str(first["edges"][0]["count"]), exact=True).first.wait_for()
        svg.locator("g.edge").first.wait_for()
        assert svg.locator("g.edge").count() == len(first["edges"])
        page.set_viewport_size({"width": 1440, "height": 1400})
        page.wait_for_timeout(2000)  # let the chart finish drawing before the picture
        ARTIFACTS.mkdir(exist_ok=True)
        shot = ARTIFACTS / "dashboard-stack.png"
        page.screenshot(path=str(shot), full_page=True)
        assert shot.stat().st_size > 20_000
        path_shot = ARTIFACTS / "dashboard-stack-path.png"
        page.locator("[data-testid=stGraphVizChart]").screenshot(path=str(path_shot))
        assert path_shot.stat().st_size > 5_000
    assert "Traceback" not in (tmp_path / "streamlit.log").read_text()
