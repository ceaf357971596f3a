"""The analyzer's additions to netsentinel/threats.py and store.py: batched
add/merge with counts, a raised level bringing its words, the ban-command
source for auto-ban, and batched history lines with rotation."""

from __future__ import annotations

import json

from netsentinel import threats
from netsentinel.netinfo import Protected
from netsentinel.whitelist import Whitelist


def _threat(level, key="dst|192.0.2.5", **kw):
    return {"level": level, "category": kw.pop("category", level.lower()), "confidence": 0.5,
            "reason": f"{level} reason", "recommended_action": "review", "target": "192.0.2.5",
            "dedupe_key": key, "event": {"daddr": "192.0.2.5"}, **kw}


def test_batch_merges_counts_and_raises_level(records):
    out = threats.add_or_merge_many(records, [(_threat("HIGH", category="suspicious_port"), 3),
                                              (_threat("HIGH", key="dst|192.0.2.6"), 1)])
    assert [merged for _, merged in out] == [False, False]
    (t, merged), = threats.add_or_merge_many(records, [(_threat("CRITICAL", category="port_scan",
                                                                confidence=0.95), 19)])
    assert merged and t["count"] == 22 and t["level"] == "CRITICAL"
    assert t["category"] == "port_scan" and t["reason"] == "CRITICAL reason" and t["confidence"] == 0.95
    # A lower level later merges without taking over the words.
    t, merged = threats.add_or_merge(records, _threat("HIGH", category="suspicious_port"))
    assert merged and t["count"] == 23 and t["category"] == "port_scan"
    assert len(threats.list_threats(records, "pending")) == 2


def test_same_key_twice_in_one_batch_is_one_threat(records):
    out = threats.add_or_merge_many(records, [(_threat("HIGH"), 1), (_threat("HIGH"), 2)])
    assert [m for _, m in out] == [False, True]
    (t,) = threats.list_threats(records)
    assert t["count"] == 3


def test_decided_threat_is_not_merged_into(records):
    t, _ = threats.add_or_merge(records, _threat("CRITICAL"))
    threats.reject(records, t["id"], by="test")
    t2, merged = threats.add_or_merge(records, _threat("CRITICAL"))
    assert not merged and t2["id"] != t["id"] and t2["status"] == "pending"


def test_approve_with_auto_source(records):
    t, _ = threats.add_or_merge(records, _threat("CRITICAL"))
    threats.approve(records, t["id"], by="auto-ban", source="auto", ttl_seconds=600,
                    whitelist=Whitelist(), protected=Protected())
    (cmd,) = records.read("ban_commands.json")
    assert cmd["source"] == "auto" and cmd["ttl_seconds"] == 600 and cmd["ip"] == "192.0.2.5"
    assert threats.list_threats(records)[0]["decided_by"] == "auto-ban"


def test_append_jsonl_many_rotates_in_one_batch(records):
    records.append_jsonl_many("h.jsonl", [{"i": i, "pad": "x" * 40} for i in range(40)],
                              max_bytes=600, keep=2)
    files = {p.name: p.read_text().splitlines() for p in records.root.glob("h.jsonl*")}
    assert set(files) == {"h.jsonl", "h.jsonl.1", "h.jsonl.2"}
    assert all(len("\n".join(lines)) <= 600 for lines in files.values())
    assert json.loads(files["h.jsonl"][-1])["i"] == 39
    kept = sorted(json.loads(ln)["i"] for lines in files.values() for ln in lines)
    assert kept == list(range(kept[0], 40))  # the newest lines, none lost in between
