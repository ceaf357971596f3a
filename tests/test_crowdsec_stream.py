"""The CrowdSec bouncer and machine without a LAPI: Go durations, the
--crowdsec-* flags and their environment/.env fallbacks, and what a hostile
or huge stream answer does (fed to the bouncer's queue as its thread would)."""

from __future__ import annotations

import json
import time

import pytest

from crowdsec_support import Maps, table_for
from netsentinel.loader.crowdsec import Bouncer, go_duration
from netsentinel.loader.crowdsec_machine import STATE, Machine


def test_go_durations():
    assert go_duration("3h59m58.5s") == pytest.approx(4 * 3600 - 1.5)
    assert go_duration("-2.3354ms") == pytest.approx(-0.0023354)
    assert go_duration("1h0m0s") == 3600 and go_duration("500µs") == pytest.approx(0.0005)
    for bad in ("", "3 hours", "1h;rm", None, 12):
        with pytest.raises(ValueError):
            go_duration(bad)


def test_fleet_options_from_flags_environment_and_dotenv(tmp_path, monkeypatch):
    from netsentinel.loader.cli import build_parser
    from netsentinel.loader.fleet import fleet_options
    for k in ("CROWDSEC_LAPI_URL", "CROWDSEC_BOUNCER_KEY", "CROWDSEC_MACHINE_ID",
              "CROWDSEC_MACHINE_PASSWORD"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.chdir(tmp_path)
    parse = build_parser().parse_args
    assert fleet_options(parse([])) is None
    (tmp_path / ".env").write_text("CROWDSEC_LAPI_URL=http://10.0.0.5:8080\nCROWDSEC_BOUNCER_KEY=s3cr3t\n")
    o = fleet_options(parse([]))
    assert (o.url, o.key, o.machine_id, o.interval) == ("http://10.0.0.5:8080", "s3cr3t", None, 10.0)
    assert "s3cr3t" not in repr(o)
    monkeypatch.setenv("CROWDSEC_BOUNCER_KEY", "fromenv")
    assert fleet_options(parse([])).key == "fromenv"                  # environment beats .env
    o = fleet_options(parse(["--crowdsec-key", "flag", "--crowdsec-interval", "2",
                             "--crowdsec-machine-id", "m", "--crowdsec-machine-password", "pw"]))
    assert (o.key, o.interval, o.machine_id, o.machine_password) == ("flag", 2.0, "m", "pw")
    assert "pw" not in repr(o)
    for argv, words in ((["--crowdsec-url", "10.0.0.5:8080"], "must start with http"),
                        (["--crowdsec-interval", "0"], "between 0.5 and 3600")):
        with pytest.raises(ValueError, match=words):
            fleet_options(parse(argv))
    monkeypatch.delenv("CROWDSEC_BOUNCER_KEY")
    (tmp_path / ".env").write_text("CROWDSEC_LAPI_URL=http://10.0.0.5:8080\n")
    with pytest.raises(ValueError, match="bouncer key"):
        fleet_options(parse([]))


def test_hostile_stream_entries_are_ignored_or_refused_with_a_reason(tmp_path):
    """What a compromised or buggy LAPI could send: nothing crashes, nothing
    unsafe is banned, each kind gets one line."""
    maps = Maps()
    table = table_for(tmp_path, maps)
    b = Bouncer("http://127.0.0.1:9", "k", table.warnings.append)
    body = {"new": [
        "not an object", {"id": 1, "type": "ban", "scope": "Country", "value": "FR", "duration": "1h"},
        {"id": 2, "type": "ban", "scope": "Ip", "value": "203.0.113.50", "duration": "forever"},
        {"id": 3, "type": "ban", "scope": "Ip", "value": "not-an-ip", "duration": "1h"},
        {"id": 4, "type": "ban", "scope": "Range", "value": "0.0.0.0/0", "duration": "1h"},
        {"id": 5, "type": "ban", "scope": "Ip", "value": "203.0.113.51", "duration": "-1s"},
        {"id": 6, "type": "ban", "scope": "ip", "value": "203.0.113.52", "duration": "30m"},
    ], "deleted": [{"id": 99}, None]}
    b._results.put(("pull", True, body, time.time()))
    assert b.poll(table) == 3
    assert maps.nets == {"203.0.113.52/32"}
    assert b.counts["refused"] == 2 and b.counts["applied"] == 1 and b.counts["ignored"] == 3
    rejected = {r["command"]["ip"]: r["error"] for r in
                json.loads((tmp_path / "ban_commands.rejected.json").read_text())}
    assert "not a valid IP" in rejected["not-an-ip"] and "too broad" in rejected["0.0.0.0/0"]
    line = next(w for w in table.warnings if w.startswith("crowdsec: ignored"))
    assert "1 malformed" in line and "'Country'-scope" in line and "readable duration" in line
    b._results.put(("pull", False, {"new": "x", "deleted": 5}, time.time()))
    assert b.poll(table) == 0 and "without 'new'/'deleted' lists" in table.warnings[-1]
    b.client.close()


def test_a_large_pull_is_applied_in_chunks_before_the_next_answer(tmp_path):
    """12,000 decisions: applied CHUNK per loop turn (the loop never stalls on
    a big startup pull), and a delete that arrives meanwhile waits until the
    ban it lifts is in place."""
    from netsentinel.loader.crowdsec import CHUNK
    maps = Maps()
    table = table_for(tmp_path, maps)
    b = Bouncer("http://127.0.0.1:9", "k", table.warnings.append)
    new = [{"id": i, "type": "ban", "scope": "Ip", "value": f"100.64.{i // 250}.{i % 250 + 1}",
            "duration": "1h"} for i in range(12000)]
    b._results.put(("pull", True, {"new": new, "deleted": None}, time.time()))
    b._results.put(("pull", False, {"new": None, "deleted": [new[-1]]}, time.time()))
    assert [b.poll(table) for _ in range(4)] == [CHUNK, CHUNK, 12000 - 2 * CHUNK, 1]
    assert len(maps.nets) == 11999 and "100.64.47.250/32" not in maps.nets
    assert b.poll(table) == 0 and b.counts["applied"] == 12000 and b.counts["removed"] == 1
    b.client.close()


def test_unhashable_ids_and_a_corrupt_machine_state_do_not_crash(tmp_path):
    maps = Maps()
    table = table_for(tmp_path, maps)
    b = Bouncer("http://127.0.0.1:9", "k", table.warnings.append)
    b._results.put(("pull", False, {"new": [{"id": [1], "type": "ban", "scope": "Ip",
                                             "value": "203.0.113.60", "duration": "1h"}],
                                    "deleted": [{"id": {"x": 1}}]}, time.time()))
    assert b.poll(table) == 0 and maps.nets == set() and b.counts["ignored"] == 1
    b.client.close()
    (tmp_path / STATE).write_text('{"pushed": {"203.0.113.61": [1, "x", true]}, "to_delete": 7}')
    m = Machine("http://127.0.0.1:9", "m", "pw", table.store, table.warnings.append)
    assert m.pushed == {"203.0.113.61": [1]} and m.to_delete == {}
    m.client.close()
    (tmp_path / STATE).write_text('[1, 2]')
    m = Machine("http://127.0.0.1:9", "m", "pw", table.store, table.warnings.append)
    assert m.pushed == {} and any("set aside" in w for w in table.warnings)
    m.client.close()


def test_a_big_pull_is_summed_up_and_still_refuses_what_it_must(tmp_path):
    """From BULK_MIN commands the batch path runs: one ban_batch event per
    slice instead of one per ban, and the same refusals, each with its
    reason: this host, a whitelisted address, ranges covering either."""
    from crowdsec_support import OWN, TRUSTED
    from netsentinel.loader.banbatch import BULK_MIN
    maps = Maps()
    table = table_for(tmp_path, maps)
    b = Bouncer("http://127.0.0.1:9", "k", table.warnings.append)
    values = [f"100.65.{i // 250}.{i % 250 + 1}" for i in range(BULK_MIN * 2)]
    hostile = [OWN, TRUSTED, "192.0.2.0/24", "198.51.100.8/29", "2001:db8::/32"]
    new = [{"id": i, "type": "ban", "scope": "Range" if "/" in v else "Ip", "value": v,
            "duration": "1h", "scenario": "list", "origin": "lists"}
           for i, v in enumerate(values + hostile + ["198.51.100.16/29"])]
    b._results.put(("pull", True, {"new": new, "deleted": []}, time.time()))
    assert b.poll(table) == len(new) and b.poll(table) == 0
    assert maps.nets == {f"{v}/32" for v in values} | {"198.51.100.16/29", "2001:db8::/32"}
    rejected = {r["command"]["ip"]: r["error"] for r in
                json.loads((tmp_path / "ban_commands.rejected.json").read_text())}
    assert set(rejected) == set(hostile[:4])
    assert "an address of this machine" in rejected[OWN] and "whitelisted" in rejected[TRUSTED]
    assert "covers 192.0.2.1" in rejected["192.0.2.0/24"]
    assert "overlaps whitelisted 198.51.100.9" in rejected["198.51.100.8/29"]
    kinds = [t for t, _ in table.events]
    assert "ban" not in kinds and kinds.count("ban_rejected") == 4
    (summary,) = [f for t, f in table.events if t == "ban_batch"]
    assert summary["applied"] == len(values) + 2 and summary["refused"] == 4
    assert summary["source"] == "crowdsec" and summary["count"] == len(new)
    assert b.counts["applied"] == len(values) + 2 and b.counts["refused"] == 4
    saved = json.loads((tmp_path / "banned_ips.json").read_text())
    assert set(saved) == {*values, "198.51.100.16/29", "2001:db8::/32"}
    b.client.close()


def test_policy_index_never_clears_what_check_policy_refuses(tmp_path):
    """The batch path's shortcut: a target it lets through without asking
    check_policy must be one check_policy lets through too."""
    import ipaddress
    import random
    from netsentinel.addresses import parse_target
    from netsentinel.bancheck import BanCommand, BanRefused, check_policy
    from netsentinel.loader.banbatch import PolicyIndex
    from netsentinel.netinfo import Protected
    from netsentinel.whitelist import WhitelistFile
    cfg = tmp_path / "fc.json"
    cfg.write_text(json.dumps({"trusted_ips": ["10.1.2.3", "10.1.4.0/24", "fd00::5"]}))
    wl = WhitelistFile(cfg).current()
    prot = Protected([(parse_target(a), "x") for a in ("10.1.2.4", "10.1.2.128/25", "127.0.0.0/8",
                                                       "fd00::6")])
    index = PolicyIndex(wl, prot)
    rng = random.Random(7)
    checked = cleared = 0
    for _ in range(20000):
        if rng.random() < 0.8:
            addr, plen = ipaddress.IPv4Address(rng.randrange(0x0A010000, 0x0A010600)), rng.randint(20, 32)
        else:
            addr, plen = ipaddress.IPv6Address(0xFD00 << 112 | rng.randrange(0, 16)), rng.randint(120, 128)
        net = ipaddress.ip_network(f"{addr}/{plen}", strict=False)
        try:
            check_policy(BanCommand("ban", net, None, "t", None), wl, prot)
            allowed = True
        except BanRefused:
            allowed = False
        assert allowed or not index.clear(net), net
        checked += allowed
        cleared += index.clear(net)
    assert 0 < cleared <= checked < 20000   # both kinds were tried, the shortcut taken
