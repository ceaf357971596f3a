"""Schema 4 (eventstore/procs.py): a row's process as one procs id, one
(proc, ts) index in place of the comm and exe ones. A schema-3 store opens,
keeps its rows and answers every filter as before; process filters read the
new index; retention takes a pair out of procs with its last row, so the
table follows the rows however many names a hostile user makes up. SQLite
(tests/data/events-schema3.sqlite3.gz: a store the schema-3 code, 8f4b8d7,
wrote) and a throwaway PostgreSQL server (tests/eventstore_support.py)."""

from __future__ import annotations

import gzip
import shutil
import sqlite3
from pathlib import Path

import pytest

from eventstore_support import dsn, entry, pg_server  # noqa: F401 (fixtures)
from netsentinel.eventstore import Query, Retention, open_store
from netsentinel.eventstore import base as base_mod
from netsentinel.eventstore import query as query_mod
from netsentinel.eventstore import summary
from netsentinel.eventstore.rows import row_of
from netsentinel.eventstore.schema import COLUMNS, SCHEMA_VERSION

FIXTURE = Path(__file__).parent / "data" / "events-schema3.sqlite3.gz"
T0 = 1796126400.0  # the fixture's first row, 2026-12-01T10:00:00Z
EVIL = "/tmp/\u00e9vil name"
# Every filter the dashboard and `netsentinel events` build, on the
# fixture's programs (two curls, a comm with no exe, an exe with no comm, a
# 15-character name with a non-ASCII path).
QUERIES = [Query(limit=1000), Query(process="curl", limit=1000), Query(exe="/usr/bin/curl", limit=1000),
           Query(process="/usr/bin/curl", limit=1000), Query(process="bash", limit=1000),
           Query(exe="/usr/bin/ghost", limit=1000), Query(process="x" * 15, limit=1000),
           Query(exe=EVIL, limit=1000), Query(process="nobody", limit=1000),
           Query(process="curl", since=T0 + 3000, until=T0 + 6000, limit=7, page=2),
           Query(process="curl", exe="/opt/curl/bin/curl", level="HIGH", min_level=True),
           Query(addr="10.222.1.3", limit=1000), Query(src="10.222.2.1", limit=1000),
           Query(src="10.222.0.1", limit=1000), Query(addr="10.222.0.2", since=T0 + 5000),
           Query(src="10.222.1.3", limit=1000),
           Query(dst="10.222.1.4", kind="threat"), Query(text="curl", since=T0 + 100, limit=1000)]


def _answers(db) -> list:
    out = []
    for q in QUERIES:
        out.append([(r["id"], r["comm"], r["exe"], r["connects"], r["doc"]) for r in db.search(q)])
        out.append(db.count(q))
        out.append(db.counts_by("exe", q))
        out.append(db.timeline(q, 600))
    out.append(db.investigate(Query(process="curl")))
    out.append(db.top(("comm", "exe"), Query(kind="connection"), 10, 1000))
    return out


def _unpack(path: Path) -> None:
    with gzip.open(FIXTURE) as src, open(path, "wb") as dst:
        shutil.copyfileobj(src, dst)


def _schema3_store(dsn: str, monkeypatch, tmp_path: Path) -> None:
    """SQLite: the file the schema-3 code wrote. PostgreSQL: its rows in a
    store made by migrations 1 to 3 (schema 3's)."""
    if "://" not in dsn:
        return _unpack(Path(dsn))
    _unpack(tmp_path / "fixture.sqlite3")
    conn = sqlite3.connect(tmp_path / "fixture.sqlite3")
    rows = conn.execute(f"SELECT {', '.join(COLUMNS)} FROM events ORDER BY id").fetchall()
    conn.close()
    monkeypatch.setattr(base_mod, "SCHEMA_VERSION", 3)
    old = open_store(dsn)
    cur = old.conn.cursor()
    cur.executemany(f"INSERT INTO events ({', '.join(COLUMNS)}) VALUES "
                    f"({', '.join(old.ph for _ in COLUMNS)})", rows)
    summary.add(old, cur, rows)
    old.conn.commit()
    assert old.schema_version() == 3 and "proc" not in old.columns("events")
    old.close()
    monkeypatch.undo()


def _index_names(db) -> set[str]:
    if db.engine == "sqlite":
        return {r[0] for r in db._all("SELECT name FROM sqlite_master WHERE type = 'index'", [])}
    return {r[0] for r in db._all("SELECT indexname FROM pg_indexes WHERE tablename = 'events'", [])}


def test_a_schema_3_store_migrates_keeps_its_rows_and_answers_the_same(dsn, monkeypatch, tmp_path):
    _schema3_store(dsn, monkeypatch, tmp_path)
    reader = open_store(dsn, readonly=True)  # the writer not yet upgraded: schema 3's plan
    assert reader.schema_version() == 3
    before = _answers(reader)
    reader.close()
    assert before[0] and len(before[0]) == 320 and before[4] and before[20]  # rows for the filters
    db = open_store(dsn)
    assert db.schema_version() == SCHEMA_VERSION == 4
    assert _answers(db) == before
    names = _index_names(db)
    assert "events_proc_ts" in names and not names & {"events_comm_ts", "events_exe_ts"}
    pairs = db._all("SELECT comm, exe FROM procs", [])
    assert sorted(pairs, key=repr) == sorted({(c, e) for c, e in db._all(
        "SELECT comm, exe FROM events WHERE comm IS NOT NULL OR exe IS NOT NULL", [])}, key=repr)
    assert db._all("SELECT COUNT(*) FROM events WHERE proc IS NULL AND (comm IS NOT NULL "
                   "OR exe IS NOT NULL)", []) == [(0,)]
    db.close()
    again = open_store(dsn)  # migrated once; new rows are found by the same filters
    again.add_rows([row_of(entry(900, ts="2026-12-01T18:00:00.000000Z")),
                    row_of(entry(901, ts="2026-12-01T18:00:01.000000Z", comm="bash", exe=EVIL))])
    assert again.count(Query(process="curl")) == before[QUERIES.index(Query(process="curl", limit=1000)) * 4 + 1] + 1
    assert [r["ref"] for r in again.search(Query(exe=EVIL, limit=1))] == ["e000385"]
    again.close()


def test_retention_takes_a_pair_out_of_procs_with_its_last_row(dsn):
    db = open_store(dsn, Retention(max_age_days=1))
    old = [row_of(entry(i, ts="2026-11-01T10:00:00.000000Z", comm=f"evil{i}", exe=f"/tmp/e{i}"))
           for i in range(300)]
    new = [row_of(entry(1000 + i, ts="2026-12-01T10:00:00.000000Z")) for i in range(3)]
    db.add_rows(old + new)
    assert db._all("SELECT COUNT(*) FROM procs", []) == [(301,)]
    assert db.retention_step(now=T0) == 300
    assert db._all("SELECT comm, exe FROM procs", []) == [("curl", "/usr/bin/curl")]
    db.add_rows([row_of(entry(7, ts="2026-12-01T10:00:01.000000Z", comm="evil7", exe="/tmp/e7"))])
    assert [r["ref"] for r in db.search(Query(process="evil7"))] == ["e000007"]  # back, as its pair
    assert db.count(Query(process="curl")) == 3
    db.close()


def test_a_name_given_to_many_programs_is_found_through_the_subquery(dsn, monkeypatch):
    db = open_store(dsn)
    db.add_rows([row_of(entry(i, comm="same", exe=f"/bin/p{i % 4}")) for i in range(20)])
    expect = [r["id"] for r in db.search(Query(process="same", limit=100))]
    assert len(expect) == 20
    monkeypatch.setattr(query_mod, "MAX_IDS", 2)  # four ids: past it
    w, _ = db._where(Query(process="same"))
    assert "SELECT id FROM procs" in w
    assert [r["id"] for r in db.search(Query(process="same", limit=100))] == expect
    db.close()


@pytest.mark.parametrize("query, plan", [
    (Query(process="curl", since=1.0), "SEARCH events USING INDEX events_proc_ts (proc=? AND ts>?)"),
    (Query(exe="/usr/bin/curl"), "SEARCH events USING INDEX events_proc_ts (proc=?)"),
    (Query(src="10.222.0.77"), "SEARCH events USING INDEX events_saddr_ts (saddr=?)"),
])
def test_sqlite_a_page_of_one_process_reads_its_index_in_time_order(tmp_path, query, plan):
    db = open_store(str(tmp_path / "events.sqlite3"))
    db.add_rows([row_of(entry(0))])
    w, params = db._where(query)
    found = " ".join(str(r) for r in db.conn.execute(
        f"EXPLAIN QUERY PLAN SELECT * FROM events{w} ORDER BY ts DESC, id DESC LIMIT 50", params))
    assert plan in found and "TEMP B-TREE" not in found, found  # (proc, ts, id): no sort
    db.close()


def test_a_connections_own_source_is_found_and_other_sources_read_the_partial_index(dsn, monkeypatch):
    from netsentinel.eventstore import sources
    db = open_store(dsn)
    flow = {"id": "f1", "level": "CRITICAL", "event": {"v": 1, "type": "flow",
                                                       "ts": "2026-12-01T10:00:05.000000Z", "src": "10.222.0.77"}}
    db.add_rows([row_of(entry(i, saddr="10.222.0.1" if i % 2 else None)) for i in range(10)]
                + [row_of(flow)])
    assert [r["ref"] for r in db.search(Query(src="10.222.0.77"))] == ["f1"]
    assert len(db.search(Query(src="10.222.0.1"))) == 5 == db.count(Query(addr="10.222.0.1"))
    assert "kind <> 'connection'" in db._where(Query(addr="10.222.0.77"))[0]
    assert "kind <> 'connection'" not in db._where(Query(addr="10.222.0.1"))[0]
    # A local user binding address after address: the list stops, and every
    # address is then read as a connection's source too (exact, slower).
    monkeypatch.setattr(sources, "MAX_SOURCES", 3)
    db.add_rows([row_of(entry(20 + i, saddr=f"10.222.9.{i}")) for i in range(5)])
    assert db._all("SELECT COUNT(*) FROM conn_saddrs", []) == [(3,)]
    assert db.count(Query(src="10.222.9.4")) == 1 and db.count(Query(addr="10.222.9.3")) == 1
    assert "kind <> 'connection'" not in db._where(Query(addr="10.222.0.77"))[0]
    db.close()


def test_a_refused_batch_does_not_leave_its_sources_listed_in_memory_only(dsn):
    db = open_store(dsn)
    bad = row_of(entry(1, saddr="10.222.5.5"))
    with pytest.raises(Exception):
        db.add_rows([bad, bad[:3]])  # a malformed row: the batch rolls back
    db.add_rows([bad])
    assert db.count(Query(src="10.222.5.5")) == 1
    db.close()
