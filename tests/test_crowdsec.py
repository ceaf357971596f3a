"""The CrowdSec bouncer and machine against a real LAPI (Debian's crowdsec,
run alone by netsentinel.testing.crowdsec), with the loader's real BanTable
over map stand-ins (the kernel side is tests/test_crowdsec_kernel.py)."""

from __future__ import annotations

import json
import time

import pytest

from crowdsec_support import OWN, TRUSTED, Maps, table_for
from netsentinel.loader.crowdsec import Bouncer, go_duration
from netsentinel.loader.crowdsec_machine import STATE, Machine
from netsentinel.records import PENDING_THREATS
from netsentinel.timefmt import expiry_of
from netsentinel.testing.crowdsec import Lapi, missing_reason
from netsentinel.testing.lab import wait_until

SKIP = missing_reason()
needs_lapi = pytest.mark.skipif(SKIP is not None, reason=str(SKIP))


@pytest.fixture(scope="module")
def lapi():
    if SKIP:
        pytest.skip(SKIP)
    lapi = Lapi()
    lapi.start()
    yield lapi
    lapi.close()


def pull(bouncer, table, what="a pull"):
    """Wait for the bouncer thread's next answer and apply it in this (the loop's) thread."""
    before = bouncer.counts["pulls"] + bouncer.counts["failures"]
    wait_until(lambda: not bouncer._results.empty(), 15, what=what)
    bouncer.poll(table)
    return bouncer.counts["pulls"] + bouncer.counts["failures"] - before


@needs_lapi
def test_bouncer_follows_decisions_refuses_protected_and_reconciles_on_restart(lapi, tmp_path):
    key = lapi.bouncer_key("unit-bouncer")
    maps = Maps()
    table = table_for(tmp_path, maps)
    b = Bouncer(lapi.url, key, table.warnings.append, interval=0.5)
    lapi.cscli("decisions", "add", "-i", "203.0.113.10", "-d", "1h", "-R", "ssh-bf")
    lapi.cscli("decisions", "add", "-r", "203.0.113.128/25", "-d", "2h")
    lapi.cscli("decisions", "add", "-i", OWN, "-d", "1h")        # this host: refused
    lapi.cscli("decisions", "add", "-i", TRUSTED, "-d", "1h")    # whitelisted: refused
    lapi.cscli("decisions", "add", "-i", "203.0.113.11", "-d", "1h", "-t", "captcha")  # not a ban
    b.start()
    try:
        pull(b, table, "the startup pull")
        assert maps.nets == {"203.0.113.10/32", "203.0.113.128/25"}
        rec = table.bans["203.0.113.10"]
        assert rec["source"] == "crowdsec" and rec["reason"] == "ssh-bf (cscli)"
        assert 3500 < expiry_of(rec) - time.time() <= 3600
        assert b.counts["refused"] == 2 and b.counts["ignored"] == 1
        rejected = json.loads((tmp_path / "ban_commands.rejected.json").read_text())
        assert {r["command"]["ip"] for r in rejected} == {OWN, TRUSTED}
        assert any("captcha" in w for w in table.warnings)
        # A local ban of the same address is neither taken over nor lifted by the fleet.
        assert table.apply_external([{"action": "ban", "ip": "203.0.113.12", "source": "manual"}]) == [True]
        lapi.cscli("decisions", "add", "-i", "203.0.113.12", "-d", "1h")
        lapi.cscli("decisions", "delete", "-i", "203.0.113.10")
        wait_until(lambda: pull(b, table) and "203.0.113.10/32" not in maps.nets, 15,
                   what="the deleted decision lifted")
        lapi.cscli("decisions", "delete", "-i", "203.0.113.12")
        for _ in range(2):
            pull(b, table)
        assert table.bans["203.0.113.12"]["source"] == "manual" and "203.0.113.12/32" in maps.nets
    finally:
        b.stop()

    # Loader restart: bans come back from banned_ips.json; one decision was
    # deleted and one added meanwhile; the first full pull reconciles, and the
    # ban that did not change is not applied again (no duplicate event).
    lapi.cscli("decisions", "delete", "-r", "203.0.113.128/25")
    lapi.cscli("decisions", "add", "-i", "203.0.113.20", "-d", "1h")
    lapi.cscli("decisions", "add", "-i", "203.0.113.21", "-d", "1h")
    maps2 = Maps()
    table2 = table_for(tmp_path, maps2)
    assert table2.restore() == 2
    assert maps2.nets == {"203.0.113.128/25", "203.0.113.12/32"}
    b2 = Bouncer(lapi.url, key, table2.warnings.append, interval=0.5)
    b2.start()
    try:
        pull(b2, table2, "the startup pull after a restart")
        assert maps2.nets == {"203.0.113.12/32", "203.0.113.20/32", "203.0.113.21/32"}
        applied = [(t, f["ip"], f["result"]) for t, f in table2.events if t in ("ban", "unban")]
        assert ("unban", "203.0.113.128/25", "removed") in applied
        assert sorted(ip for t, ip, result in applied if result != "restored") == [
            "203.0.113.128/25", "203.0.113.20", "203.0.113.21"]   # the unban and two new bans only
    finally:
        b2.stop()
    # And a third start, nothing changed in LAPI: nothing is re-applied.
    table3 = table_for(tmp_path, Maps())
    table3.restore()
    b3 = Bouncer(lapi.url, key, table3.warnings.append, interval=0.5)
    b3.start()
    try:
        pull(b3, table3)
        assert [f for t, f in table3.events if f.get("result") in ("applied", "updated", "removed")] == []
    finally:
        b3.stop()
    for ip in ("203.0.113.20", "203.0.113.21", OWN, TRUSTED, "203.0.113.11"):
        lapi.cscli("decisions", "delete", "-i", ip)


@needs_lapi
def test_outage_keeps_bans_backs_off_and_recovers(tmp_path):
    lapi = Lapi()
    lapi.start()
    try:
        key = lapi.bouncer_key("outage-bouncer")
        maps = Maps()
        table = table_for(tmp_path, maps)
        b = Bouncer(lapi.url, key, table.warnings.append, interval=0.5)
        m = Machine(lapi.url, *lapi.machine("outage-machine"), table.store, table.warnings.append,
                    retry=0.5)
        lapi.cscli("decisions", "add", "-i", "203.0.113.30", "-d", "1h")
        b.start()
        m.start()
        try:
            pull(b, table)
            assert "203.0.113.30/32" in maps.nets
            lapi.kill()
            wait_until(lambda: (b.poll(table), b.state == "outage")[1], 15, what="outage noticed")
            assert "203.0.113.30/32" in maps.nets and table.bans["203.0.113.30"]["source"] == "crowdsec"
            assert b.status()["state"] == "outage" and b.status()["last_error"]
            assert any("unreachable" in w and "keeping the 1 crowdsec bans" in w for w in table.warnings)
            # A ban approved here meanwhile waits in the machine's queue.
            assert table.apply_external([{"action": "ban", "ip": "203.0.113.32"}]) == [True]
            m.on_outcome(*table.events[-1], table)
            wait_until(lambda: m.status()["state"] == "outage", 15, what="the machine's outage")
            assert m.status()["queued"] == 1 and m.status()["last_error"]
            lapi.start()
            lapi.cscli("decisions", "add", "-i", "203.0.113.31", "-d", "1h")
            wait_until(lambda: (b.poll(table), "203.0.113.31/32" in maps.nets)[1], 60,
                       what="recovery after LAPI came back")
            assert b.state == "ok" and "203.0.113.30/32" in maps.nets
            assert any("answers again" in w for w in table.warnings)
            wait_until(lambda: [d for d in lapi.decisions() if d["value"] == "203.0.113.32"], 60,
                       what="the queued push delivered")
        finally:
            b.stop()
            m.stop()
    finally:
        lapi.close()


@needs_lapi
def test_machine_pushes_approved_bans_and_deletes_only_its_own(lapi, tmp_path):
    mid, pw = lapi.machine("unit-machine")
    maps = Maps()
    table = table_for(tmp_path, maps)
    store = table.store
    m = Machine(lapi.url, mid, pw, store, table.warnings.append)
    m.start()
    try:
        def outcome(raw):
            assert table.apply_external([raw]) == [True]
            ty, f = table.events[-1]
            m.on_outcome(ty, f, table)

        store.write(PENDING_THREATS, [{"id": "t1", "category": "port_scan",
                                       "reason": "SYNs to 40 ports in 3 s"}])
        outcome({"action": "ban", "ip": "203.0.113.40", "source": "review:t1", "reason": "HIGH port_scan",
                 "threat_id": "t1"})
        outcome({"action": "ban", "ip": "203.0.113.41", "source": "auto", "reason": "llm"})   # not pushed
        outcome({"action": "ban", "ip": "203.0.113.0/28", "source": "auto-flood", "ttl_seconds": 600})

        def mine():
            m.poll()
            return {d["value"]: d for d in lapi.decisions() if d["scenario"].startswith("netsentinel/")}
        got = wait_until(lambda: len(mine()) == 2 and mine(), 20, what="both pushed")
        assert got["203.0.113.40"]["scenario"] == "netsentinel/port_scan"
        assert got["203.0.113.40"]["message"].startswith("SYNs to 40 ports in 3 s")
        assert got["203.0.113.0/28"]["scope"] == "Range" and got["203.0.113.0/28"]["scenario"] == "netsentinel/flood"
        assert go_duration(got["203.0.113.0/28"]["duration"]) <= 600
        saved = json.loads((store.root / STATE).read_text())
        assert set(saved["pushed"]) == {"203.0.113.40", "203.0.113.0/28"}
        # Someone else's decision on the same address stays when we unban.
        lapi.cscli("decisions", "add", "-i", "203.0.113.40", "-d", "1h", "-R", "other")
        outcome({"action": "unban", "ip": "203.0.113.40"})
        wait_until(lambda: "203.0.113.40" not in mine(), 20, what="our decision deleted")
        left = [d for d in lapi.decisions() if d["value"] == "203.0.113.40"]
        assert [d["scenario"] for d in left] == ["other"]
        wait_until(lambda: (m.poll(), not json.loads((store.root / STATE).read_text())["to_delete"])[1],
                   10, what="delete recorded")
        # A restart pushes nothing twice.
        m.stop()
        m = Machine(lapi.url, mid, pw, store, table.warnings.append)
        m.start()
        m.on_outcome("ban", {"ip": "203.0.113.0/28", "result": "restored"}, table)
        assert m.status()["queued"] == 0
    finally:
        m.stop()
        for ip in ("203.0.113.40",):
            lapi.cscli("decisions", "delete", "-i", ip)
        lapi.cscli("decisions", "delete", "-r", "203.0.113.0/28")


@needs_lapi
def test_machine_unban_while_the_push_is_in_flight(lapi, tmp_path):
    """Unbanned before LAPI answered the push: the decision it made is deleted
    once its id is known, and nothing stays recorded as owed."""
    mid, pw = lapi.machine("inflight-machine")
    table = table_for(tmp_path, Maps())
    m = Machine(lapi.url, mid, pw, table.store, table.warnings.append)
    for raw in ({"action": "ban", "ip": "203.0.113.70"}, {"action": "unban", "ip": "203.0.113.70"}):
        assert table.apply_external([raw]) == [True]
        m.on_outcome(*table.events[-1], table)
    m.start()   # the worker starts only now: both happened before any answer
    try:
        wait_until(lambda: (m.poll(), m.counts["pushed"] == 1 and m.counts["deleted"] == 1
                            and not m.to_delete)[1], 20, what="push then delete")
        assert not [d for d in lapi.decisions() if d["value"] == "203.0.113.70"]
        assert json.loads((table.store.root / STATE).read_text()) == {"pushed": {}, "to_delete": {}}
    finally:
        m.stop()
