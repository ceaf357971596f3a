"""The time-bucketed summary (event_buckets) against real engines: it equals
a GROUP BY over the rows (rows and the connects folded events stand for)
after inserts, after retention and after the migration of a store an older
NetSentinel wrote, and the figures read from it equal the figures read from
the rows, to the event, for ranges whose ends fall inside a minute. SQLite files and a throwaway PostgreSQL server
(tests/eventstore_support.py)."""

from __future__ import annotations

import random

import pytest

from eventstore_support import dsn, entry, pg_server  # noqa: F401 (fixtures)
from netsentinel.eventstore import Query, Retention, open_store
from netsentinel.eventstore import base as base_mod
from netsentinel.eventstore.rows import row_of, stored_record
from netsentinel.eventstore.schema import CONNECTS, COLUMNS, MIGRATIONS, SCHEMA_VERSION
from netsentinel.timefmt import parse_iso, utc_now_iso

T0 = parse_iso("2026-12-01T10:00:00Z")


def _rows(n: int, seed: int = 3) -> list[tuple]:
    """n verdicts over two hours from T0, at microsecond times (some on a
    minute exactly), of three levels and two kinds, a few with no level, some
    folded (`count`: the connects one event stands for; a few hostile ones,
    counted as one), and two before 1970 (a negative time: the floor goes
    down, not to zero)."""
    rnd = random.Random(seed)
    out = []
    for i in range(n):
        ts = T0 + rnd.choice([rnd.randrange(0, 7200) * 1.0, rnd.randrange(0, 7200_000_000) / 1e6])
        e = entry(i, ts=utc_now_iso(ts), level=rnd.choice(["INFO", "INFO", "MEDIUM", "HIGH"]))
        if i % 7 == 0:
            e["event"] = {"v": 1, "type": "flow", "ts": e["event"]["ts"], "src": "10.222.0.77"}
        elif i % 11 == 3:
            e["event"]["count"] = rnd.randrange(2, 5000)
        elif i % 101 == 4:
            e["event"]["count"] = rnd.choice(["many", 2**40, -3, True, 0])
        if i % 50 == 0:
            e["level"] = None
        out.append(row_of(e))
    out += [row_of(entry(n, ts="1969-12-31T23:59:30.500000Z")),
            row_of(entry(n + 1, ts="1969-12-31T23:58:59.000000Z"))]
    return out


def test_the_writers_tally_in_c_equals_the_tally_of_its_rows():
    from netsentinel.eventstore import summary
    rows = _rows(3000) + [row_of(entry(9000 + i, ts=ts)) for i, ts in enumerate(
        ("1969-12-31T23:59:59.999999Z", "1970-01-01T00:00:00.000000Z", "2026-12-01T10:00:59.999999Z",
         "2026-12-01T10:01:00.000000Z", "1969-12-31T23:59:00.000000Z"))]
    rows.append(rows[1][:3] + (None,) + rows[1][4:])  # no level
    assert summary.tally_rows(rows) == summary.tally(summary.of_rows(rows))


def _summary(db) -> dict:
    """{(minute, level, kind): (rows, connects)}"""
    return {(int(b), lv, k): (int(n), int(c)) for b, lv, k, n, c in
            db._all("SELECT bucket_start, level, kind, n, connects FROM event_buckets", [])}


def _group_by(db) -> dict:
    """What the summary must hold: the rows grouped by minute, level, kind,
    counted and their connects added up (NULL: one)."""
    out: dict = {}
    for ts, lv, k, c in db._all("SELECT ts, level, kind, connects FROM events", []):
        key = (int(ts // 60) * 60, lv or "", k)
        n, conns = out.get(key, (0, 0))
        out[key] = (n + 1, conns + (c or 1))
    return out


def _rows_of(summary: dict) -> int:
    return sum(n for n, _ in summary.values())


@pytest.fixture
def db(dsn):
    store = open_store(dsn)
    yield store
    store.close()


def test_the_summary_equals_a_group_by_after_inserts(db):
    for k in range(4):  # batches upsert into buckets earlier batches started
        db.add_rows(_rows(300, seed=k))
    got = _summary(db)
    assert got == _group_by(db)
    assert _rows_of(got) == 4 * 302
    assert sum(c for _, c in got.values()) > _rows_of(got)  # folded events count their connects
    assert (-60, "INFO", "connection") in got and (-120, "INFO", "connection") in got  # before 1970
    assert any(lv == "" for _, lv, _ in got)  # no level: counted under ''


def test_a_refused_batch_leaves_the_summary_as_it_was(db):
    db.add_rows(_rows(50))
    before = _summary(db)
    bad = list(_rows(1, seed=9)[0])
    bad[2] = None  # kind NOT NULL: the engine refuses the row, and so its batch
    with pytest.raises(Exception):
        db.add_rows(_rows(20, seed=8) + [tuple(bad)])
    assert _summary(db) == before == _group_by(db)


RANGES = [
    (None, None),
    (T0 + 123.456789, None),                 # starts inside a minute
    (None, T0 + 4000.5),                     # ends inside a minute
    (T0 + 59.999999, T0 + 3600.000001),      # a microsecond either side of whole minutes
    (T0 + 120, T0 + 3600),                   # whole minutes
    (T0 + 61.5, T0 + 150.25),                # within two minutes: the rows alone
    (T0 + 30, T0 + 40),                      # within one minute
    (T0 - 7200, T0 + 65),
]


@pytest.mark.parametrize("since, until", RANGES)
def test_figures_from_the_summary_equal_figures_from_the_rows(db, since, until):
    db.add_rows(_rows(600))
    queries = [Query(since=since, until=until), Query(since=since, until=until, kind="flow"),
               Query(since=since, until=until, level="MEDIUM", min_level=True),
               Query(since=since, until=until, levels=("INFO",), kind="connection")]

    def figures():
        return [(db.count(q), db.counts_by("level", q, top=10), db.counts_by("kind", q),
                 [(float(t), lv, n) for t, lv, n in db.timeline(q, 600)],
                 {k: [(float(t), lv, n) for t, lv, n in v]
                  for k, v in db.timelines_by_kind(q, 1800).items()})
                for q in queries]

    assert db.has_summary()
    from_summary = figures()
    db._summary = False  # as a store without the table: every figure from the rows
    from_rows = figures()
    assert from_summary == from_rows
    assert from_summary[0][0] > 0 or (since, until) == (T0 + 30, T0 + 40)


def test_retention_counts_deleted_rows_out_never_below_zero(db, monkeypatch):
    monkeypatch.setattr(base_mod, "RETENTION_BATCH", 97)
    db.add_rows(_rows(800))
    now = T0 + 3600 + 10 * 86400  # a 10-day limit: everything before T0 + 1 h goes
    db.retention = Retention(max_age_days=10)
    while db.retention_step(now):
        assert _summary(db) == _group_by(db)  # after every step, not only at the end
    assert db.count(Query(until=T0 + 3600)) == 0 < db.count(Query())
    assert min(b for b, _, _ in _summary(db)) >= T0 + 3600
    # A summary that (somehow) counts fewer rows than a bucket holds: the
    # rows' deletion takes it to zero and removes it, never below.
    key = max(_summary(db))
    cur = db.conn.cursor()
    cur.execute(f"UPDATE event_buckets SET n = 1 WHERE bucket_start = {db.ph} AND level = {db.ph} "
                f"AND kind = {db.ph}", key)
    db.conn.commit()
    while db.retention_step(now + 86400):
        pass
    assert _summary(db) == {} and db.count(Query()) == 0


def test_sqlite_retention_by_size_keeps_the_summary(tmp_path, monkeypatch):
    monkeypatch.setattr(base_mod, "RETENTION_BATCH", 100)
    db = open_store(str(tmp_path / "events.sqlite3"), Retention(max_age_days=3650, max_bytes=1 << 20))
    for k in range(6):
        db.add_rows(_rows(1000, seed=k))
        while db.size_bytes() > db.retention.max_bytes and db.retention_step(T0 + 86400):
            pass
    assert 0 < db.count(Query()) < 6000
    assert _summary(db) == _group_by(db)
    db.close()


def _old_store(dsn, monkeypatch, rows, version: int = 1) -> None:
    """What NetSentinel with schema `version` left: the rows (no connects
    column: a fold's `count` only in doc), and from version 2 their summary
    (rows only)."""
    monkeypatch.setattr(base_mod, "SCHEMA_VERSION", version)
    old = open_store(dsn)
    cols = COLUMNS[:CONNECTS]
    cur = old.conn.cursor()
    cur.executemany(f"INSERT INTO events ({', '.join(cols)}) VALUES "
                    f"({', '.join(old.ph for _ in cols)})", [r[:CONNECTS] for r in rows])
    for stmt in MIGRATIONS[old.engine][2][1:] if version == 2 else ():  # rebuilt from the rows
        cur.execute(stmt)
    old.conn.commit()
    assert old.schema_version() == version and "connects" not in old.columns("events")
    old.close()
    monkeypatch.undo()


def test_migration_builds_the_summary_of_an_older_store(dsn, monkeypatch):
    rows = _rows(700)
    _old_store(dsn, monkeypatch, rows)
    reader = open_store(dsn, readonly=True)  # before the writer migrated: from the rows
    assert not reader.has_summary() and reader.count(Query(since=T0 + 90.5)) > 0
    expected_counts = reader.counts_by("level", Query(since=T0 + 90.5))
    reader.close()
    db = open_store(dsn)  # the writer migrates on start
    assert db.schema_version() == SCHEMA_VERSION == 4 and db.has_summary()
    assert _summary(db) == _group_by(db) and _rows_of(_summary(db)) == len(rows)
    assert db.counts_by("level", Query(since=T0 + 90.5)) == expected_counts
    db.add_rows(_rows(100, seed=5))  # and keeps it from then on
    assert _summary(db) == _group_by(db)
    db.close()
    again = open_store(dsn)  # migrated once: a restart does not count twice
    assert _summary(again) == _group_by(again)
    again.close()


def test_sqlite_reads_a_range_of_the_summary_by_its_key(tmp_path):
    db = open_store(str(tmp_path / "events.sqlite3"))
    db.add_rows(_rows(100))
    seen: list[str] = []
    db.conn.set_trace_callback(seen.append)  # the statements as run, parameters bound
    db.timelines_by_kind(Query(since=T0 + 90.5, until=T0 + 3000.5), 600)
    db.conn.set_trace_callback(None)
    (summary_sql,) = [q for q in seen if "FROM event_buckets" in q]
    plan = " ".join(str(r) for r in db.conn.execute("EXPLAIN QUERY PLAN " + summary_sql))
    assert "USING PRIMARY KEY (bucket_start>? AND bucket_start<?)" in plan, plan
    assert len([q for q in seen if "FROM events" in q]) == 2  # the two partial minutes
    db.close()


def test_a_folded_event_counts_its_connects_in_timelines_and_one_row_in_counts(db):
    minute = T0 + 600
    folded = entry(1, ts=utc_now_iso(minute + 5), count=40, window_s=0.8)
    db.add_rows([row_of(folded), row_of(entry(2, ts=utc_now_iso(minute + 6))),
                 row_of(entry(3, ts=utc_now_iso(minute + 7), count="forty"))])  # hostile: one
    q = Query(since=minute, until=minute + 60)
    assert db.timeline(q, 60) == [(minute, "INFO", 42)]  # 40 + 1 + 1 connects
    assert db.timelines_by_kind(Query(since=minute - 0.5), 60)["connection"] == [(minute, "INFO", 42)]
    assert db.count(q) == 3 and db.counts_by("kind", q) == [("connection", 3)]  # rows: for paging
    (row,) = [r for r in db.search(q) if r["ref"] == folded["id"]]
    assert row["connects"] == 40 and stored_record(row)["event"]["count"] == 40  # doc keeps it


def test_migration_to_3_counts_the_folds_a_schema_2_store_kept_in_doc(dsn, monkeypatch):
    rows = _rows(700)
    _old_store(dsn, monkeypatch, rows, version=2)
    reader = open_store(dsn, readonly=True)  # before the writer migrated: rows, connects unknown
    assert reader.has_summary() and {r["connects"] for r in reader.search(Query(limit=1000))} == {None}
    assert sum(n for _, _, n in reader.timeline(Query(), 3600)) == len(rows)
    reader.close()
    db = open_store(dsn)
    assert db.schema_version() == SCHEMA_VERSION and _summary(db) == _group_by(db)
    folds = {r[-1] for r in rows if r[-1] is not None}
    assert folds and {c for (c,) in db._all("SELECT connects FROM events", [])} == folds | {None}
    assert sum(n for _, _, n in db.timeline(Query(), 3600)) == sum(r[-1] or 1 for r in rows)
    db.close()
