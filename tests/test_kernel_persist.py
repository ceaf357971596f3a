"""Enforcement never fails open (issue 10, kernel side), measured in the lab.

A banned peer sends UDP to the host under test at a fixed rate while a
receiver there counts what gets through (tests/persist_support.py): across a
loader SIGKILL + restart, SIGTERM + restart and an upgrade that changes the
program, nothing may arrive; a TTL ban ends on time while no loader runs; a
first start has the saved bans in the maps before XDP sees a packet; rule
changes never leave a moment without rules. Pins and locks:
test_kernel_pins.py.
"""

from __future__ import annotations

import json
import signal
import socket
import time

import pytest

from netlab import (lab,  # noqa: F401  (module-scoped fixture)
                    ban_event, kernel_test_skip_reason, sh, unload_all, wait_until, write_commands)
from persist_support import LINKS, pinned_link, pinned_map, run  # noqa: F401  (run: fixture)
from netsentinel.timefmt import parse_iso
from netsentinel.abi import ENFORCER_XDP

SKIP = kernel_test_skip_reason()
pytestmark = pytest.mark.skipif(SKIP is not None, reason=str(SKIP))


def test_nothing_gets_through_crash_restart_and_upgrade(lab, run, tmp_path):
    lp = run()
    write_commands(tmp_path, [{"action": "ban", "ip": lab.peer4, "reason": "persist"}])
    ban_event(lp, lab.peer4, result="applied")
    t = run.traffic()
    t.wait_sent(300)

    lp.stop(signal.SIGKILL)                       # crash, then a normal start
    t.wait_sent(300)
    lp2 = run()
    start = lp2.all_events[0]
    assert set(start["links_adopted"]) == LINKS and start["links_replaced"] == []
    assert start["bans_restored"] == 1
    t.wait_sent(300)

    assert lp2.stop(signal.SIGTERM) == 0          # plain stop, then start
    t.wait_sent(300)
    before = pinned_link(lab, ENFORCER_XDP)
    lp3 = run("--test-define", "NS_TEST_UPGRADE=1")   # a changed program: replaced through the links
    start = lp3.all_events[0]
    assert set(start["links_adopted"]) == LINKS and set(start["links_replaced"]) == LINKS
    after = pinned_link(lab, ENFORCER_XDP)
    assert after["id"] == before["id"] and after["prog_id"] != before["prog_id"], \
        "the program must change inside the same link, never by detach and attach"
    assert any("replaced through the pinned links" in line for line in lp3.stderr_lines)
    t.wait_sent(300)
    assert lp3.stop(signal.SIGINT) == 0
    t.wait_sent(300)

    sent = t.sent()
    assert t.alive() and sent >= 2100
    assert t.received() == (0, None), f"{t.received()[0]} of {sent} banned datagrams got through"
    # The receiver does count: with everything unloaded the same traffic arrives.
    unload_all(lab)
    wait_until(lambda: t.received()[0] > 0, 10, what="datagrams once unloaded")


def test_ttl_ban_ends_on_time_while_no_loader_runs(lab, run, tmp_path):
    lp = run()
    write_commands(tmp_path, [{"action": "ban", "ip": lab.peer4, "ttl_seconds": 10}])
    expires_at = parse_iso(ban_event(lp, lab.peer4, result="applied")["expires_at"])
    assert lp.stop() == 0
    t = run.traffic()
    t.wait_sent(300)
    assert time.time() < expires_at, "the loader took longer to stop than the TTL: nothing measured"
    assert t.received() == (0, None)
    n, first = wait_until(lambda: (t.received()[0] or not t.alive()) and t.received(),
                          expires_at - time.time() + 20, what="the ban to expire with no loader running")
    assert t.alive(), "the sender or receiver died"
    # Not before its time (0.25 s: converting Unix time to CLOCK_BOOTTIME).
    assert first >= expires_at - 0.25, f"ban ended {expires_at - first:.2f} s early"
    assert lp.proc.poll() is not None
    # The next loader deletes the expired entry from the kernel map and the record.
    lp2 = run()
    ban_event(lp2, lab.peer4, type_="unban", result="expired")
    dump = sh("bpftool", "-j", "map", "dump", "pinned", f"{lab.pin_root}/{lab.dut_if}/bans4").stdout
    assert json.loads(dump) == []


def test_first_start_fills_the_maps_before_any_program_sees_traffic(lab, run, tmp_path):
    """The banned peer is already sending when the loader first starts: had
    XDP run before the saved ban was in its map, the peer would have a row in
    the flow statistics (only packets that pass get one). It never does."""
    (tmp_path / "banned_ips.json").write_text(json.dumps({lab.peer4: {"reason": "saved"}}))
    t = run.traffic()
    t.wait_sent(100)
    assert t.received()[0] > 0                    # nothing enforced yet: it arrives
    lp = run()
    assert lp.all_events[0]["links_adopted"] == [] and lp.all_events[0]["bans_restored"] == 1
    t.wait_sent(500)
    assert lab.ping(lab.peer, lab.dut4, source=lab.peer4b)   # an unbanned source does get a row
    sources = {bytes(int(b, 16) for b in row["key"])[4:8] for row in pinned_map(lab, "flows")}
    assert socket.inet_aton(lab.peer4b) in sources
    assert socket.inet_aton(lab.peer4) not in sources, \
        "packets from the banned peer passed XDP before its ban was in the map"
    bans = pinned_map(lab, "bans4")
    assert len(bans) == 1
    assert not any(e.get("src") == lab.peer4 for e in lp.all_events if e["type"] == "flow")


def test_restart_drops_pinned_bans_the_record_no_longer_lists(lab, run, tmp_path):
    lp = run()
    write_commands(tmp_path, [{"action": "ban", "ip": lab.peer4}])
    ban_event(lp, lab.peer4, result="applied")
    assert lp.stop() == 0
    assert not lab.ping(lab.peer, lab.dut4)
    (tmp_path / "banned_ips.json").write_text("{}\n")   # a person removed it by hand
    lp2 = run()
    assert any(f"removed {lab.peer4} from the pinned ban map" in line for line in lp2.stderr_lines)
    assert lab.ping(lab.peer, lab.dut4)


def test_an_expired_ban_never_hides_a_live_broader_one_and_rules_survive(lab, run, tmp_path):
    """With no loader running, peer4's TTL ban ends on time while peer4b's
    expired /32 does not uncover it: the live /25 behind it still drops. A
    drop rule keeps dropping across a crash and an adopting restart."""
    o, n = lab.dut4.split(".")[1:3]
    wide = f"10.{o}.{n}.128/25"                   # holds peer4b (.130), not the dut (.1) or peer4 (.2)
    lp = run()
    write_commands(tmp_path, [{"action": "ban", "ip": wide},
                              {"action": "ban", "ip": lab.peer4b, "ttl_seconds": 4},
                              {"action": "ban", "ip": lab.peer4, "ttl_seconds": 4}])
    ban_event(lp, wide, result="applied")
    ban_event(lp, lab.peer4b, result="applied")
    expires_at = parse_iso(ban_event(lp, lab.peer4, result="applied")["expires_at"])
    (tmp_path / "rule_commands.json").write_text(json.dumps([{"action": "add_rule", "rule": {
        "id": "no-echo-v6", "action": "drop", "proto": "icmpv6", "icmp_type": 128, "src": lab.peer6}}]))
    lp.wait_for(lambda e: e["type"] == "rule" and e.get("id") == "no-echo-v6", 10, "rule loaded")
    wait_until(lambda: "no-echo-v6" in (tmp_path / "filter_rules.json").read_text(), 10,
               what="the rule recorded")
    lp.stop(signal.SIGKILL)
    assert not lab.ping(lab.peer, lab.dut6)
    wait_until(lambda: time.time() > expires_at, expires_at - time.time() + 5, what="the TTL to pass")
    wait_until(lambda: lab.ping(lab.peer, lab.dut4), 10, what="peer4's TTL ban to end")
    assert not lab.ping(lab.peer, lab.dut4, source=lab.peer4b), "an expired /32 uncovered its /25"
    lp2 = run()
    assert set(lp2.all_events[0]["links_adopted"]) == LINKS
    assert not lab.ping(lab.peer, lab.dut6), "the drop rule stopped across the restart"
    assert not lab.ping(lab.peer, lab.dut4, source=lab.peer4b)
    assert lab.ping(lab.peer, lab.dut4)


def test_a_ban_applied_but_not_yet_saved_is_never_dropped_on_restart(lab, run, tmp_path):
    """A crash between putting a ban in the kernel and saving banned_ips.json
    leaves the command queued: the next loader applies it before it drops
    pinned bans the record lacks, so the ban never lapses."""
    lp = run()
    write_commands(tmp_path, [{"action": "ban", "ip": lab.peer4}])
    ban_event(lp, lab.peer4, result="applied")
    wait_until(lambda: not (tmp_path / "ban_commands.json").read_text().strip("[] \n"), 10,
               what="the command consumed")
    assert lp.stop() == 0
    # The state such a crash leaves: in the kernel, still queued, not recorded.
    (tmp_path / "banned_ips.json").write_text("{}\n")
    write_commands(tmp_path, [{"action": "ban", "ip": lab.peer4}])
    t = run.traffic()
    t.wait_sent(200)
    lp2 = run()
    ban_event(lp2, lab.peer4, result="applied")
    t.wait_sent(200)
    assert not any(f"removed {lab.peer4}" in line for line in lp2.stderr_lines)
    assert t.received() == (0, None)


def test_changing_the_rules_never_leaves_a_moment_without_them(lab, run, tmp_path):
    """Rule sets are double-buffered: while other rules come and go 20 times,
    a drop rule matching the peer's steady traffic lets nothing through. 50
    more rules make each rewrite long enough that a set switched off while
    being rewritten (as before) lets datagrams through."""
    lp = run()

    def rules(*commands):
        (tmp_path / "rule_commands.json").write_text(json.dumps(list(commands)))

    port = 40000 + lab.n
    rules({"action": "add_rule", "rule": {"id": "steady", "action": "drop", "src": lab.peer4,
                                          "proto": "udp", "dport": port}})
    lp.wait_for(lambda e: e["type"] == "rule" and e.get("id") == "steady", 10, "drop rule")
    rules(*({"action": "add_rule", "rule": {"id": f"fill{i}", "action": "count", "proto": "tcp",
                                            "dport": 2000 + i}} for i in range(50)))
    lp.wait_for(lambda e: e["type"] == "rule" and e.get("id") == "fill49", 20, "filler rules")
    t = run.traffic()
    t.wait_sent(200)
    for i in range(10):
        rules({"action": "add_rule", "rule": {"id": f"churn{i}", "action": "count", "proto": "tcp",
                                              "dport": 1000 + i}})
        lp.wait_for(lambda e: e["type"] == "rule" and e.get("id") == f"churn{i}", 10, "rule added")
        rules({"action": "remove_rule", "id": f"churn{i}"})
        lp.wait_for(lambda e: e["type"] == "rule" and e.get("id") == f"churn{i}"
                    and e.get("result") == "removed", 10, "rule removed")
    t.wait_sent(200)
    assert t.alive() and t.received() == (0, None), f"{t.received()[0]} datagrams got through"


def test_a_rule_applied_but_not_yet_saved_never_leaves_the_map(lab, run, tmp_path):
    """A crash between putting a rule command in the kernel and saving
    filter_rules.json leaves the command queued and the file without the rule.
    The next loader loads file + queued commands as one set, so the rule never
    leaves the map. Many ban commands queued with it (a crash under load) would
    stretch a gap between loading the file and re-applying the command to
    hundreds of datagrams at the peer's steady 1,000 a second."""
    lp = run()
    port = 40000 + lab.n
    steady = {"action": "add_rule", "rule": {"id": "steady", "action": "drop", "src": lab.peer4,
                                             "proto": "udp", "dport": port}}
    (tmp_path / "rule_commands.json").write_text(json.dumps([steady]))
    lp.wait_for(lambda e: e["type"] == "rule" and e.get("id") == "steady", 10, "drop rule")
    wait_until(lambda: "steady" in (tmp_path / "filter_rules.json").read_text(), 10,
               what="the rule recorded")
    t = run.traffic()
    t.wait_sent(200)
    lp.stop(signal.SIGKILL)
    # The state such a crash leaves: in the kernel, still queued, not recorded.
    (tmp_path / "filter_rules.json").write_text(json.dumps({"rules": []}))
    (tmp_path / "rule_commands.json").write_text(json.dumps([steady]))
    o = lab.dut4.split(".")[1]
    others = [x for x in range(1, 251) if x != lab.n][:12]
    write_commands(tmp_path, [{"action": "ban", "ip": f"10.{o}.{x}.{h}"} for x in others
                              for h in range(1, 251)])
    t.wait_sent(200)
    lp2 = run()
    assert lp2.all_events[0]["rules_restored"] == 0
    lp2.wait_for(lambda e: e["type"] == "rule" and e.get("id") == "steady", 10, "rule re-applied")
    t.wait_sent(300)
    assert "steady" in (tmp_path / "filter_rules.json").read_text()
    assert t.alive() and t.received() == (0, None), \
        f"{t.received()[0]} datagrams got through while the rule was out of the map"
