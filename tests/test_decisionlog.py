"""Decisions on pending threats become event-store rows once each, at their
own decision time, whoever made them (netsentinel/analyzer/decisionlog.py)."""

from __future__ import annotations

import time

from netsentinel import threats
from netsentinel.analyzer.decisionlog import DecisionLog, newest_decision
from netsentinel.eventstore import Query, open_store
from netsentinel.records import PENDING_THREATS
from netsentinel.store import RecordsStore
from netsentinel.timefmt import parse_iso, utc_now_iso


def _threat(i: int) -> dict:
    return {"id": f"t{i:04d}", "created_at": utc_now_iso(), "status": "pending", "count": 1,
            "level": "CRITICAL", "category": "port_scan", "confidence": 0.9, "reason": "scan",
            "target": f"203.0.113.{i}", "dedupe_key": f"dst|203.0.113.{i}",
            "event": {"type": "connection", "comm": "nmap", "exe": "/usr/bin/nmap", "pid": 7,
                      "daddr": f"203.0.113.{i}", "dport": 22, "ts": utc_now_iso()}}


def test_each_decision_is_recorded_once_at_its_own_time(tmp_path):
    store = RecordsStore(tmp_path / "records")
    store.write(PENDING_THREATS, [_threat(i) for i in range(1, 5)])
    log = DecisionLog(store, since=None)
    assert log.poll() == []  # nothing decided yet
    threats.approve(store, "t0001", by="dashboard alice", note="scanner")
    threats.reject(store, "t0002", by="uid 0 (netsentinel threats)", note="lab host")
    rows = log.poll()
    assert [(r[2], r[4], r[17]) for r in rows] == [("decision", "approved port_scan", "t0001"),
                                                    ("decision", "rejected port_scan", "t0002")]
    assert rows[0][8] == "dashboard alice: approved (scanner)"
    decided = {t["id"]: t for t in threats.list_threats(store)}
    assert rows[1][0] == parse_iso(decided["t0002"]["decided_at"])  # the decision's own time
    assert log.poll() == []  # unchanged file: nothing again
    store.write(PENDING_THREATS, store.read(PENDING_THREATS))  # rewritten, same decisions
    assert log.poll() == []
    threats.reject(store, "t0003", by="dashboard bob")
    assert [r[17] for r in log.poll()] == ["t0003"]


def test_a_restarted_analyzer_starts_after_the_newest_stored_decision(tmp_path):
    store = RecordsStore(tmp_path / "records")
    store.write(PENDING_THREATS, [_threat(i) for i in range(1, 4)])
    dsn = str(tmp_path / "records" / "events.sqlite3")
    assert newest_decision(dsn, print) is None  # no store yet
    db = open_store(dsn)
    log = DecisionLog(store, since=newest_decision(dsn, print))
    threats.reject(store, "t0001", by="a")
    threats.reject(store, "t0002", by="b")
    db.add_rows(log.poll())
    again = DecisionLog(store, since=newest_decision(dsn, print))
    assert again.poll() == []  # both already stored
    threats.reject(store, "t0003", by="c")
    db.add_rows(again.poll())
    assert db.count(Query(kind="decision")) == 3
    db.close()


def test_hostile_items_are_skipped_not_fatal(tmp_path):
    store = RecordsStore(tmp_path / "records")
    good = dict(_threat(1), status="approved", decided_at=utc_now_iso(time.time() - 5), decided_by="x")
    store.write(PENDING_THREATS, ["x", 1, None, {"status": "approved"},
                                  {"status": "rejected", "decided_at": "yesterday"},
                                  {"status": "approved", "decided_at": ["no"]}, good])
    assert [r[17] for r in DecisionLog(store, since=None).poll()] == ["t0001"]
    (tmp_path / "records" / PENDING_THREATS).write_text("{not json")
    log = DecisionLog(store, since=None)
    assert log.poll() == []
    assert (tmp_path / "records" / PENDING_THREATS).read_text() == "{not json"  # left for its owner
