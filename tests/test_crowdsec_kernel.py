"""The loader as a CrowdSec bouncer and machine in the namespace lab: a real
LAPI (Debian's crowdsec, in the host under test's namespace so the loader
reaches it on its own loopback), real decisions from cscli, real packets.

Decision → the peer's packets dropped at XDP and connect() to it refused
with EPERM within one pull → decision deleted → traffic passes; a ban
approved here shows up in `cscli decisions list`; the dut's own address and
a whitelisted one are refused; LAPI killed → bans stay, recovery after.
"""

from __future__ import annotations

import errno
import json
import os

import pytest

from netlab import (lab, LoaderProc, ban_event, kernel_test_skip_reason, ns_connect,  # noqa: F401
                    read_json, stop_loader, validate, wait_until, write_commands)
from netsentinel.testing.crowdsec import Lapi, missing_reason

SKIP = kernel_test_skip_reason() or missing_reason()
pytestmark = pytest.mark.skipif(SKIP is not None, reason=str(SKIP))
PULL_S = "0.5"


@pytest.fixture(scope="module")
def lapi(lab):
    lapi = Lapi(ns=lab.dut)
    lapi.start()
    yield lapi
    lapi.close()


@pytest.fixture(scope="module")
def records(tmp_path_factory, lab):
    d = tmp_path_factory.mktemp("records")
    (d / "filter_config.json").write_text(json.dumps({"trusted_ips": [lab.peer6b]}))
    return d


def start(lab, lapi, records, key, machine):
    # Credentials through the environment, as a service unit would pass them.
    env = {"CROWDSEC_LAPI_URL": lapi.url, "CROWDSEC_BOUNCER_KEY": key,
           "CROWDSEC_MACHINE_ID": machine[0], "CROWDSEC_MACHINE_PASSWORD": machine[1]}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        lp = LoaderProc(lab, records, records / "filter_config.json", "--crowdsec-interval", PULL_S)
    finally:
        for k, v in saved.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
    validate(lp.wait_started())
    return lp


@pytest.fixture(scope="module")
def creds(lapi):
    return lapi.bouncer_key("lab-dut"), lapi.machine("lab-dut")


@pytest.fixture(scope="module")
def loader(lab, lapi, records, creds):
    lp = start(lab, lapi, records, *creds)
    yield lp
    if lp.proc.poll() is None:  # the restart test stops (and unloads) it itself
        stop_loader(lab, lp)


def status(loader) -> dict:
    return (read_json(loader.records / "loader_status.json", {}).get("stats") or {}).get("crowdsec") or {}


def test_decision_drops_at_xdp_and_blocks_connect_then_lifts(lab, lapi, loader):
    assert lab.ping(lab.peer, lab.dut4)
    lapi.cscli("decisions", "add", "-i", lab.peer4, "-d", "1h", "-R", "lab-scan")
    ev = ban_event(loader, lab.peer4, result="applied", timeout=30)
    assert ev["source"] == "crowdsec" and ev["reason"] == "lab-scan (cscli)" and ev["expires_at"]
    assert not lab.ping(lab.peer, lab.dut4, count=2)
    assert ns_connect(lab, lab.peer4)["errno"] == errno.EPERM
    assert lab.ping(lab.peer, lab.dut4, source=lab.peer4b)     # its neighbour still passes
    assert read_json(loader.records / "banned_ips.json")[lab.peer4]["source"] == "crowdsec"
    lapi.cscli("decisions", "delete", "-i", lab.peer4)
    ban_event(loader, lab.peer4, type_="unban", result="removed", timeout=30)
    assert lab.ping(lab.peer, lab.dut4)
    assert ns_connect(lab, lab.peer4)["errno"] != errno.EPERM


def test_range_and_ipv6_decisions(lab, lapi, loader):
    cidr = lab.peer4b.rsplit(".", 1)[0] + ".128/25"
    lapi.cscli("decisions", "add", "-r", cidr, "-d", "1h")
    lapi.cscli("decisions", "add", "-i", lab.peer6, "-d", "1h")
    both = {cidr, lab.peer6}
    wait_until(lambda: both <= set(read_json(loader.records / "banned_ips.json", {})), 30,
               what="both decisions applied")
    assert not lab.ping(lab.peer, lab.dut4, source=lab.peer4b)      # .130 is inside the /25
    assert lab.ping(lab.peer, lab.dut4, source=lab.peer4)           # .2 is not
    assert not lab.ping(lab.peer, lab.dut6, source=lab.peer6, count=2)
    assert ns_connect(lab, lab.peer6)["errno"] == errno.EPERM
    lapi.cscli("decisions", "delete", "-r", cidr)
    lapi.cscli("decisions", "delete", "-i", lab.peer6)
    wait_until(lambda: not both & set(read_json(loader.records / "banned_ips.json", {})), 30,
               what="both lifted")
    want = {("ban", ip, "applied", "crowdsec") for ip in both} | {
        ("unban", ip, "removed", "crowdsec") for ip in both}
    wait_until(lambda: {(e["type"], e["ip"], e["result"], e["source"]) for e in loader.all_events
                        if e.get("ip") in both} == want, 10, what="their ban and unban events")
    assert lab.ping(lab.peer, lab.dut4, source=lab.peer4b) and lab.ping(lab.peer, lab.dut6)


def test_own_address_and_whitelisted_decisions_are_refused(lab, lapi, loader):
    errors = []
    for ip in (lab.dut4, lab.peer6b):
        lapi.cscli("decisions", "add", "-i", ip, "-d", "1h")
        ev = validate(loader.wait_for(lambda e: e["type"] == "ban_rejected"
                                      and e["command"].get("ip") == ip, 30, f"refusal of {ip}"))
        assert ev["command"]["source"] == "crowdsec"
        errors.append(ev["error"])
    assert "an address of this machine" in errors[0] and "whitelisted" in errors[1], errors
    wait_until(lambda: status(loader).get("bouncer", {}).get("refused", 0) >= 2, 30,
               what="refusals counted in loader_status.json")
    banned = read_json(loader.records / "banned_ips.json", {})
    assert lab.dut4 not in banned and lab.peer6b not in banned
    assert lab.ping(lab.peer, lab.dut4) and lab.ping(lab.peer, lab.dut6, source=lab.peer6b)
    for ip in (lab.dut4, lab.peer6b):
        lapi.cscli("decisions", "delete", "-i", ip)


def test_approved_ban_is_pushed_and_its_unban_deletes_it(lab, lapi, loader):
    write_commands(loader.records, [{"action": "ban", "ip": lab.peer4b, "reason": "approved scan",
                                     "source": "manual", "ttl_seconds": 900}])
    ban_event(loader, lab.peer4b, result="applied", timeout=30)
    listed = wait_until(lambda: [d for d in lapi.decisions() if d["value"] == lab.peer4b], 30,
                        what="the ban in `cscli decisions list`")
    assert listed[0]["scenario"] == "netsentinel/manual" and listed[0]["type"] == "ban"
    # Pulled back by its own bouncer, it stays a local ban.
    assert read_json(loader.records / "banned_ips.json")[lab.peer4b]["source"] == "manual"
    write_commands(loader.records, [{"action": "unban", "ip": lab.peer4b}])
    ban_event(loader, lab.peer4b, type_="unban", result="removed", timeout=30)
    wait_until(lambda: not [d for d in lapi.decisions() if d["value"] == lab.peer4b], 30,
               what="its decision deleted from LAPI")


def test_lapi_outage_keeps_enforcement_and_recovers(lab, lapi, loader):
    lapi.cscli("decisions", "add", "-i", lab.peer4, "-d", "1h", "-R", "before-outage")
    ban_event(loader, lab.peer4, result="applied", timeout=30)
    lapi.kill()
    wait_until(lambda: status(loader).get("bouncer", {}).get("state") == "outage", 30,
               what="the outage in loader_status.json")
    assert any("unreachable" in line for line in loader.stderr_lines)
    assert not lab.ping(lab.peer, lab.dut4, count=2)
    assert ns_connect(lab, lab.peer4)["errno"] == errno.EPERM
    lapi.start()
    lapi.cscli("decisions", "add", "-i", lab.peer4b, "-d", "1h", "-R", "after-outage")
    ban_event(loader, lab.peer4b, result="applied", timeout=60)
    wait_until(lambda: status(loader).get("bouncer", {}).get("state") == "ok", 30, what="state ok")
    assert not lab.ping(lab.peer, lab.dut4, count=1)


def test_restart_loses_nothing_and_duplicates_nothing(lab, lapi, loader, records, creds):
    # Continues from the outage test: peer4 and peer4b banned by the fleet.
    stop_loader(lab, loader)
    lapi.cscli("decisions", "delete", "-i", lab.peer4b)    # lifted while the loader was down
    lp = start(lab, lapi, records, *creds)
    try:
        ban_event(lp, lab.peer4b, type_="unban", result="removed", timeout=30)
        wait_until(lambda: status(lp).get("bouncer", {}).get("pulls", 0) >= 2, 30, what="two pulls")
        bans = [(e["ip"], e["result"]) for e in lp.all_events if e["type"] == "ban"]
        # Back from banned_ips.json; the full pull applied nothing a second time.
        assert bans == [(lab.peer4, "restored"), (lab.peer4b, "restored")]
        assert not lab.ping(lab.peer, lab.dut4, count=1)
        assert lab.ping(lab.peer, lab.dut4, source=lab.peer4b)
        lapi.cscli("decisions", "delete", "-i", lab.peer4)
        ban_event(lp, lab.peer4, type_="unban", result="removed", timeout=30)
        assert lab.ping(lab.peer, lab.dut4)
    finally:
        stop_loader(lab, lp)
    said = "\n".join(loader.stderr_lines + lp.stderr_lines) + json.dumps(lp.all_events) + (
        records / "loader_status.json").read_text()
    assert creds[0] not in said and creds[1][1] not in said, "a credential was printed"
