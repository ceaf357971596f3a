"""The TCX ingress path (issue 18, "the interface people actually have"),
forced with --xdp-mode tc on the lab veth: the same maps and logic as XDP
(a banned peer dropped, rules hit, per-source stats), pinned and adopted
across a crash with nothing getting through, and --unload leaving nothing.
virtio-net itself is not testable here (no virtio NIC): tests/test_ingress.py
checks the "why native failed" wording from a fake sysfs/ethtool view."""

from __future__ import annotations

import json
import signal

import pytest

from netlab import (lab,  # noqa: F401  (module-scoped fixture)
                    ban_event, kernel_test_skip_reason, read_json, sh, unload_all, validate,
                    wait_until, write_commands)
from netsentinel.testing.lab import VENV_PY
from persist_support import LINKS, pinned_link, run  # noqa: F401  (run: fixture)
from netsentinel.abi import ENFORCER_TC, ENFORCER_XDP

SKIP = kernel_test_skip_reason()
pytestmark = pytest.mark.skipif(SKIP is not None, reason=str(SKIP))
TC_LINKS = LINKS - {ENFORCER_XDP} | {ENFORCER_TC}


QUERY = ("import json, socket, sys; from netsentinel.kernel.libbpf import prog_query, "
         "ATTACH_TCX_INGRESS as T; print(json.dumps(prog_query(socket.if_nametoindex(sys.argv[1]), T)))")


def tcx_ingress(lab) -> list[str]:
    """Names of the programs on the lab interface's TCX ingress (BPF_PROG_QUERY
    in its namespace: Debian's bpftool 7.1 `net show` predates TCX)."""
    ids = json.loads(sh("ip", "netns", "exec", lab.dut, VENV_PY, "-c", QUERY, lab.dut_if).stdout)
    return [json.loads(sh("bpftool", "-j", "prog", "show", "id", str(i)).stdout)["name"] for i in ids]


def nothing_on_the_interface(lab) -> bool:
    """`bpftool net show` lists no XDP or tc program, and no TCX one is attached."""
    out = json.loads(sh("ip", "netns", "exec", lab.dut, "bpftool", "-j", "net", "show",
                        "dev", lab.dut_if).stdout)
    return all(not e.get(k) for e in out for k in ("xdp", "tc")) and tcx_ingress(lab) == []


def test_tc_mode_drops_hits_rules_keeps_stats_and_survives_a_crash(lab, run, tmp_path):
    lp = run("--xdp-mode", "tc", "--flow-interval", "0.2", "--flow-watch-pps", "1")
    start = lp.all_events[0]
    assert (start["xdp_mode"], start["ingress_path"]) == ("tc", "tcx-ingress")
    assert start["xdp_native_error"] is None and start["kernel_taint"] is None   # native not asked for
    assert not lab.xdp_attached(), "tc mode must not attach XDP"
    assert tcx_ingress(lab) == [ENFORCER_TC]
    status = read_json(tmp_path / "loader_status.json")
    assert status["ingress_path"] == "tcx-ingress" and ENFORCER_TC in status["programs"]
    shown = sh(VENV_PY, "-m", "netsentinel", "--records", str(tmp_path), "status", check=False).stdout
    assert f"interface {lab.dut_if}, XDP tc (tcx-ingress)," in shown, shown

    # Per-source statistics come from the same flows map: a flow event for the peer.
    assert lab.ping(lab.peer, lab.dut4, count=5, wait=1)
    flow = validate(lp.wait_for(lambda e: e["type"] == "flow" and e["src"] == lab.peer4, 10,
                                "a flow event for the peer"))
    assert flow["icmp"] >= 1

    # A count rule on the peer's IPv6 echo: passes and counts.
    (tmp_path / "rule_commands.json").write_text(json.dumps([{"action": "add_rule", "rule": {
        "id": "echo6", "action": "count", "proto": "icmpv6", "icmp_type": 128, "src": lab.peer6}}]))
    lp.wait_for(lambda e: e["type"] == "rule" and e.get("id") == "echo6", 10, "rule loaded")
    assert lab.ping(lab.peer, lab.dut6, count=3)
    wait_until(lambda: ((read_json(tmp_path / "filter_rules.json") or {}).get("rules") or [{}])[0]
               .get("hits", 0) >= 3, 10, what="the count rule's hits")

    # A ban: the peer's steady UDP stops at the TCX hook, and drops are counted on it.
    write_commands(tmp_path, [{"action": "ban", "ip": lab.peer4, "reason": "tcx"}])
    ban_event(lp, lab.peer4, result="applied")
    t = run.traffic()
    t.wait_sent(300)
    assert t.received() == (0, None)
    wait_until(lambda: (read_json(tmp_path / "loader_status.json") or {}).get("stats", {})
               .get("drops_total", 0) >= 300, 15, what="drops counted in the status file")

    # Crash and restart: the pinned TCX link is adopted, nothing gets through meanwhile.
    before = pinned_link(lab, ENFORCER_TC)
    lp.stop(signal.SIGKILL)
    t.wait_sent(300)
    lp2 = run("--xdp-mode", "tc")
    start = lp2.all_events[0]
    assert set(start["links_adopted"]) == TC_LINKS and start["links_replaced"] == []
    assert start["xdp_mode"] == "tc"
    assert pinned_link(lab, ENFORCER_TC)["id"] == before["id"]
    t.wait_sent(300)
    assert t.received() == (0, None)
    assert tcx_ingress(lab) == [ENFORCER_TC], "adopting must not attach a second program"

    # An auto start adopts the pinned TCX link too (it never switches paths by itself).
    assert lp2.stop() == 0
    lp3 = run()
    assert lp3.all_events[0]["xdp_mode"] == "tc" and ENFORCER_TC in lp3.all_events[0]["links_adopted"]
    assert lp3.stop() == 0
    t.stop()
    unload_all(lab)
    assert nothing_on_the_interface(lab), "--unload left a program on the interface"
    assert lab.ping(lab.peer, lab.dut4)
