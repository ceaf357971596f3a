"""Pending threats: merging duplicates, and the decisions a person makes
(approve writes exactly one ban command; reject can whitelist)."""

from __future__ import annotations

import json

import pytest

from netsentinel import threats
from netsentinel.errors import DecisionError
from netsentinel.addresses import parse_target
from netsentinel.bancheck import BanRefused
from netsentinel.netinfo import Protected
from netsentinel.records import BAN_COMMANDS, PENDING_THREATS
from netsentinel.timefmt import parse_iso
from netsentinel.whitelist import Whitelist, WhitelistFile

TARGET = "203.0.113.66"


def threat(level="HIGH", target=TARGET, confidence=0.6, **kw):
    event = {"type": "connection", "daddr": target, "dport": 4444, "comm": "nc"}
    return {"level": level, "category": kw.pop("category", "suspicious_port"),
            "confidence": confidence, "reason": f"{level}: nc to {target}:4444",
            "recommended_action": "ban", "verdict_source": "rules", "target": target,
            "dedupe_key": kw.pop("dedupe_key", f"nc|{target}|4444"), "event": event, **kw}


def test_add_then_merge_by_dedupe_key(records):
    first, merged = threats.add_or_merge(records, threat("MEDIUM", confidence=0.4))
    assert not merged and first["status"] == "pending" and first["count"] == 1
    assert first["created_at"] == first["last_seen"] and len(first["id"]) == 12

    again, merged = threats.add_or_merge(records, threat("HIGH", confidence=0.9,
                                                        category="c2_port"))
    assert merged and again["id"] == first["id"]
    assert again["count"] == 2 and again["level"] == "HIGH" and again["confidence"] == 0.9
    assert again["category"] == "c2_port" and again["reason"].startswith("HIGH")
    assert parse_iso(again["last_seen"]) >= parse_iso(first["last_seen"])
    assert again["created_at"] == first["created_at"]

    # A lower level merges too, but never lowers what is recorded.
    low, merged = threats.add_or_merge(records, threat("INFO", confidence=0.1, category="x"),
                                       times=5)
    assert merged and low["count"] == 7 and low["level"] == "HIGH"
    assert low["confidence"] == 0.9 and low["category"] == "c2_port"

    other, merged = threats.add_or_merge(records, threat("HIGH", target="203.0.113.67"))
    assert not merged and other["id"] != first["id"]
    stored = records.read(PENDING_THREATS)
    assert [t["id"] for t in stored] == [first["id"], other["id"]]
    assert threats.list_threats(records, "pending") == stored


def test_incoming_id_and_status_are_ignored(records):
    t, _ = threats.add_or_merge(records, threat(id="forged", status="approved"))
    assert t["id"] != "forged" and t["status"] == "pending"


def test_approve_writes_exactly_one_ban_command(records):
    t, _ = threats.add_or_merge(records, threat("CRITICAL"))
    decided = threats.approve(records, t["id"], by="alice", note="seen in logs", ttl_seconds=3600,
                              whitelist=Whitelist(), protected=Protected())
    assert decided["status"] == "approved" and decided["decided_by"] == "alice"
    assert decided["note"] == "seen in logs" and decided["decided_at"]
    cmds = records.read(BAN_COMMANDS)
    assert len(cmds) == 1
    cmd = cmds[0]
    assert cmd["action"] == "ban" and cmd["ip"] == TARGET and cmd["threat_id"] == t["id"]
    assert cmd["ttl_seconds"] == 3600 and cmd["source"] == f"review:{t['id']}"
    assert cmd["reason"].startswith("CRITICAL suspicious_port")
    assert decided["ban_command"] == cmd
    assert threats.list_threats(records, "pending") == []

    with pytest.raises(DecisionError, match="already approved by alice"):
        threats.approve(records, t["id"], whitelist=Whitelist(), protected=Protected())
    assert len(records.read(BAN_COMMANDS)) == 1  # still exactly one


def test_approve_unknown_id(records):
    with pytest.raises(DecisionError, match="no threat with id nope"):
        threats.approve(records, "nope")
    assert records.read(BAN_COMMANDS) is None


@pytest.mark.parametrize("whitelist, protected, words", [
    (Whitelist(), Protected([(parse_target(TARGET), "an address of this machine")]),
     f"covers {TARGET}, an address of this machine"),
    (Whitelist(), Protected([(parse_target("203.0.113.0/24"), "the default gateway")]),
     "covers 203.0.113.0/24, the default gateway"),
    (Whitelist({"trusted_ips": ["203.0.113.0/24"]}), Protected(),
     "overlaps whitelisted 203.0.113.0/24"),
])
def test_approve_of_an_unbannable_target_is_refused_and_stays_pending(records, whitelist,
                                                                      protected, words):
    t, _ = threats.add_or_merge(records, threat())
    with pytest.raises(BanRefused, match=words):
        threats.approve(records, t["id"], whitelist=whitelist, protected=protected)
    [still] = threats.list_threats(records)
    assert still["status"] == "pending" and still["decided_at"] is None
    assert "ban_command" not in still
    assert records.read(BAN_COMMANDS) is None  # no command queued


def test_approve_a_threat_without_an_address(records):
    t, _ = threats.add_or_merge(records, {"level": "HIGH", "dedupe_key": "k", "event": {}})
    with pytest.raises(DecisionError, match="names no address"):
        threats.approve(records, t["id"])
    assert threats.list_threats(records)[0]["status"] == "pending"


@pytest.mark.parametrize("config_in_records", [False, True])
def test_reject_with_whitelist_file_trusts_the_target(records, tmp_path, config_in_records):
    # The demo keeps filter_config.json inside records/: both must work.
    cfg_path = (records.root if config_in_records else tmp_path / "cfg") / "filter_config.json"
    wf = WhitelistFile(cfg_path, warn=records.warn)
    t, _ = threats.add_or_merge(records, threat())
    decided = threats.reject(records, t["id"], by="bob", note="our backup server",
                             whitelist_file=wf)
    assert decided["status"] == "rejected" and decided["whitelisted"] == TARGET
    assert decided["decided_by"] == "bob" and decided["note"] == "our backup server"
    assert json.loads(cfg_path.read_text())["trusted_ips"] == [TARGET]
    assert wf.current().match(daddr=TARGET) == f"ip {TARGET}"
    assert records.read(BAN_COMMANDS) is None
    # And now a ban of it is refused by the same whitelist.
    t2, merged = threats.add_or_merge(records, threat())
    assert not merged
    with pytest.raises(BanRefused, match="overlaps whitelisted"):
        threats.approve(records, t2["id"], whitelist=wf.current(), protected=Protected())


def test_reject_without_whitelist_and_twice(records):
    t, _ = threats.add_or_merge(records, threat())
    decided = threats.reject(records, t["id"])
    assert decided["status"] == "rejected" and "whitelisted" not in decided
    with pytest.raises(DecisionError, match="already rejected"):
        threats.reject(records, t["id"])
    with pytest.raises(DecisionError, match="already rejected"):
        threats.approve(records, t["id"])


def test_non_list_threats_file_is_set_aside(records):
    records.path(PENDING_THREATS).write_text('{"oops": 1}')
    t, merged = threats.add_or_merge(records, threat())
    assert not merged and [x["id"] for x in threats.list_threats(records)] == [t["id"]]
    asides = [p for p in records.root.iterdir() if p.name.startswith(PENDING_THREATS + ".corrupt-")]
    assert len(asides) == 1 and asides[0].read_text() == '{"oops": 1}'
