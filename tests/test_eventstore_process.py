"""The event store's writer process (eventstore/process.py, child.py): the
analyzer hands it verdicts; a writer that dies is restarted and sent every
row it had not written, none twice; the analyzer's queue stays bounded; the
real analyzer keeps judging while its writer is killed. Both engines."""

from __future__ import annotations

import contextlib
import decimal
import os
import signal
import sqlite3

from analyzer_support import conn, lines, read, start_analyzer, wait_for
from eventstore_support import dsn, entry, pg_server  # noqa: F401 (fixtures)
from netsentinel.eventstore import Query, frames, open_store, process
from netsentinel.eventstore.process import StoreProcess
from netsentinel.eventstore.rows import record_row
from netsentinel.testing.lab import wait_until


@contextlib.contextmanager
def _locked(dsn: str):
    """Another writer holding the store: the writer cannot commit meanwhile
    (SQLite: "locked" after its busy timeout; PostgreSQL: it waits)."""
    if dsn.endswith(".sqlite3"):
        holder = sqlite3.connect(dsn, isolation_level=None)
        holder.execute("BEGIN EXCLUSIVE")
    else:
        import psycopg
        holder = psycopg.connect(dsn)
        holder.execute("LOCK TABLE events IN ACCESS EXCLUSIVE MODE")
    try:
        yield
    finally:
        holder.rollback() if not dsn.endswith(".sqlite3") else holder.execute("ROLLBACK")
        holder.close()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:  # a zombie is gone too
        return f.read().split(") ")[1][0] != "Z"


def _refs(dsn: str) -> list[str]:
    db = open_store(dsn, readonly=True)
    try:
        return sorted(r["ref"] for r in db.search(Query(limit=10_000)))
    finally:
        db.close()


def test_a_killed_writer_is_restarted_and_sent_what_it_had_not_written(dsn, monkeypatch):
    monkeypatch.setattr(process, "RESTART_EVERY_S", 0.2)
    warnings: list[str] = []
    sp = StoreProcess(dsn, warnings.append)
    sp.start()
    try:
        sp.submit([], [entry(i) for i in range(5)])
        wait_until(lambda: sp.status()["rows_written"] == 5, 30, what="the first rows written")
        first = sp.status()["writer_pid"]
        with _locked(dsn):
            threat = {"id": "t-1", "level": "HIGH", "category": "suspicious_port", "event": entry(99)["event"],
                      "target": "10.222.0.5"}
            sp.submit([record_row("threat", threat)], [entry(i) for i in range(5, 12)])
            assert sp.status()["rows_buffered"] == 8
            os.kill(first, signal.SIGKILL)
            wait_until(lambda: sp.status()["writer_restarts"] == 1, 30, what="the writer's death seen")
            st = sp.status()
            assert not st["ok"] and st["rows_buffered"] == 8 and st["rows_written"] == 5
            assert any(f"process {first} exited with code -9" in w for w in warnings), warnings
        st = wait_until(lambda: (s := sp.status())["rows_written"] == 13 and s, 30,
                        what="the rows the killed writer held, written by the next")
        assert st["ok"] and st["rows_buffered"] == 0 and st["rows_dropped"] == 0
        assert st["writer_pid"] not in (None, first) and not _alive(first)
    finally:
        sp.close()
    second = st["writer_pid"]
    assert not _alive(second), "the writer must exit after close()"
    # Every row once: nothing lost, nothing the first writer had committed sent again.
    assert _refs(dsn) == sorted([f"e{i:06x}" for i in range(12)] + ["t-1"])
    assert "\n" not in "".join(warnings)


def test_a_batch_that_kills_every_writer_is_dropped_and_counted(tmp_path, monkeypatch):
    # A frame no writer survives must not stop the store for good: after
    # POISON_DEATHS writers died on it with nothing written, it is dropped.
    monkeypatch.setattr(process, "RESTART_EVERY_S", 0.1)
    real = process.frame_of

    def frame_of(now, rows, batches):
        if any(b'"id":"poison"' in batch for batch in batches):
            return frames.HEADER.pack(3) + b"m\xff\xff"  # no marshal data: the writer dies on it
        return real(now, rows, batches)
    monkeypatch.setattr(process, "frame_of", frame_of)
    warnings: list[str] = []
    dsn = str(tmp_path / "events.sqlite3")
    sp = StoreProcess(dsn, warnings.append)
    sp.start()
    try:
        sp.submit([], [entry(0)])
        wait_until(lambda: sp.status()["rows_written"] == 1, 30, what="the first row")
        sp.submit([], [dict(entry(1), id="poison")])
        wait_until(lambda: sp.status()["rows_dropped"] == 1, 60, what="the poisoned batch dropped")
        sp.submit([], [entry(2), ["not", "a", "verdict"]])
        st = wait_until(lambda: (s := sp.status())["rows_written"] == 3 and s, 60,
                        what="the rows after the poisoned batch")
    finally:
        sp.close()
    assert st["rows_dropped"] == 1 and st["writer_restarts"] == process.POISON_DEATHS
    assert any(f"killed {process.POISON_DEATHS} writer processes in a row" in w for w in warnings)
    db = open_store(dsn, readonly=True)
    rows = db.search(Query(oldest_first=True))
    db.close()
    assert [r["ref"] for r in rows] == ["e000000", "e000002", None]
    # What row_of cannot convert is a row saying so, in its place.
    assert rows[2]["reason"].startswith("a verdict the store could not convert (AttributeError")


def test_the_queue_is_bounded_and_its_overflow_counted(tmp_path, monkeypatch):
    monkeypatch.setattr(process, "MAX_QUEUED", 10)
    warnings: list[str] = []
    dsn = str(tmp_path / "events.sqlite3")
    sp = StoreProcess(dsn, warnings.append)  # not started: nothing leaves the queue yet
    for k in range(3):
        sp.submit([], [entry(k * 4 + i) for i in range(4)])
    st = sp.status()
    assert st["rows_buffered"] == 8 and st["rows_dropped"] == 4 and not st["ok"]
    assert "dropping the oldest" in st["error"] and len(warnings) == 1
    sp.start()
    sp.close()
    assert _refs(dsn) == [f"e{i:06x}" for i in range(4, 12)]  # the oldest batch went first
    assert sp.status()["rows_written"] == 8 and sp.status()["rows_buffered"] == 0


def test_a_store_locked_at_exit_is_reported_not_waited_for(tmp_path):
    warnings: list[str] = []
    dsn = str(tmp_path / "events.sqlite3")
    open_store(dsn).close()
    sp = StoreProcess(dsn, warnings.append)
    sp.start()
    with _locked(dsn):
        sp.submit([], [entry(i) for i in range(3)])
        sp.close()
    assert sp.status()["rows_buffered"] == 3
    assert any("3 rows not written at exit" in w and "locked" in w for w in warnings), warnings


EVENTS = [conn(i, daddr=f"10.222.0.{i % 4 + 5}") for i in range(40)]


def test_the_analyzer_judges_on_while_its_writer_is_killed(tmp_path):
    records = tmp_path / "records"
    proc = start_analyzer(tmp_path, ["--backend", "rules", "--status-interval", "0.2"])
    try:
        proc.stdin.write(lines(EVENTS[:20]))
        proc.stdin.flush()
        st = wait_for(lambda: (s := read(records, "analyzer_status.json")["event_store"])
                      ["rows_written"] == 20 and s, timeout=30, what="the first 20 rows")
        os.kill(st["writer_pid"], signal.SIGKILL)
        proc.stdin.write(lines(EVENTS[20:]))
        proc.stdin.flush()
        wait_for(lambda: read(records, "analyzer_status.json")["events_total"] == 40,
                 timeout=30, what="every event judged, its writer dead or restarting")
    finally:
        proc.stdin.close()
        assert proc.wait(timeout=60) == 0, proc.stderr.read()
    err = proc.stderr.read()
    assert f"process {st['writer_pid']} exited with code -9" in err
    final = read(records, "analyzer_status.json")["event_store"]
    assert final["writer_restarts"] == 1 and final["rows_buffered"] == 0
    assert _refs(str(records / "events.sqlite3")) == sorted(set(_refs(str(records / "events.sqlite3"))))
    db = open_store(str(records / "events.sqlite3"), readonly=True)
    assert db.count(Query(kind="connection")) == 40
    db.close()


def test_a_killed_analyzers_writer_writes_what_it_holds(tmp_path):
    # The analyzer killed outright while its writer holds rows (the store
    # locked): the writer sees the pipe close and writes them once it can.
    records = tmp_path / "records"
    open_store(str(records / "events.sqlite3")).close()
    proc = start_analyzer(tmp_path, ["--backend", "rules", "--status-interval", "0.2"])
    try:
        with _locked(str(records / "events.sqlite3")):
            proc.stdin.write(lines(EVENTS))
            proc.stdin.flush()
            st = wait_for(lambda: (s := read(records, "analyzer_status.json")["event_store"])
                          ["error"] and "locked" in s["error"] and s, timeout=30,
                          what="the writer holding rows, the store locked")
            proc.kill()
            proc.wait(timeout=30)
        wait_until(lambda: len(_refs(str(records / "events.sqlite3"))) == 40, 30,
                   what="the rows the killed analyzer's writer held")
    finally:
        proc.stdin.close()
    wait_until(lambda: not _alive(st["writer_pid"]), 30, what="the writer's exit")


def test_the_writer_imports_nothing_from_the_directory_it_was_started_in(tmp_path, monkeypatch):
    # The analyzer runs as root, maybe from a directory others can write:
    # `python -c` would put that directory first on the writer's sys.path.
    planted = tmp_path / "cwd"
    planted.mkdir()
    marker = tmp_path / "imported"
    (planted / "json.py").write_text(f"open({str(marker)!r}, 'w').close()\nraise SystemExit(9)\n")
    monkeypatch.chdir(planted)
    dsn = str(tmp_path / "events.sqlite3")
    sp = StoreProcess(dsn, lambda msg: None)
    sp.start()
    try:
        sp.submit([], [entry(0)])
        wait_until(lambda: sp.status()["rows_written"] == 1, 30, what="the row written")
    finally:
        sp.close()
    assert not marker.exists() and sp.status()["writer_restarts"] == 0


def test_verdicts_reach_the_store_while_the_records_flusher_is_held_up(tmp_path):
    # The records flusher (pending threats, the dashboard's window) can be
    # slow: verdicts go to the store's writer without it, none dropped for
    # its delay (a buffer of 20,000 behind it once lost 8% of a fast run).
    import io

    from analyzer_support import lines as as_lines
    from netsentinel.analyzer.pipeline import Analyzer
    from netsentinel.analyzer.rules import RuleEngine
    from netsentinel.analyzer.settings import SettingsWatcher
    from netsentinel.llm.config import validate_llm_config
    from netsentinel.store import RecordsStore
    from netsentinel.whitelist import WhitelistFile

    (tmp_path / "filter_config.json").write_text("{}")
    dsn = str(tmp_path / "events.sqlite3")
    sp = StoreProcess(dsn, lambda msg: None)
    store = RecordsStore(tmp_path / "records")
    a = Analyzer(store, SettingsWatcher(store, validate_llm_config({"backend": "rules"}), print),
                 RuleEngine(), WhitelistFile(str(tmp_path / "filter_config.json")),
                 warn=lambda m: None, history=False, events=sp)
    n = 25_000
    data = as_lines(conn(i * 0.001, pid=100 + i % 50, daddr=f"10.242.{i % 7}.{i % 200 + 1}",
                         dport=[443, 80, 53][i % 3]) for i in range(n)).encode()
    sp.start()
    try:
        with a.sink._flush_lock:   # the flusher stuck in a slow write the whole time
            a.run(io.BytesIO(data))
            st = wait_until(lambda: (s := sp.status())["rows_written"] == n and s, 120,
                            what="every verdict written with the flusher held up")
        assert st["rows_dropped"] == 0 and st["rows_buffered"] == 0
    finally:
        sp.close()
    assert open_store(dsn, readonly=True).count(Query(kind="connection")) == n


def test_each_frame_takes_the_codec_that_carries_it_whole(tmp_path):
    # Verdicts alone travel as JSON (orjson: the cheapest for the analyzer,
    # whose verdicts are shared objects); what JSON cannot carry exactly (a
    # lone surrogate, an integer past 64 bits, a key that is not a string)
    # and ready rows (tuples) go as marshal, a type neither takes as pickle.
    cases = {"plain": (1.5, [], [[entry(0), entry(1)]]),
              "surrogate": (1.5, [], [[entry(2, comm="x\ud800")]]),
              "big": (1.5, [], [[entry(3, pid=2 ** 70)]]),
              "odd_key": (1.5, [], [[dict(entry(4), extra={1: "one"})]]),
              "rows": (1.5, [record_row("threat", entry(5))], [[entry(6)]]),
              "decimal": (1.5, [], [[dict(entry(7), extra=decimal.Decimal("0.1"))]])}
    codecs = {}
    for name, frame in cases.items():
        payload = frames.encode(frame)[frames.HEADER.size:]
        codecs[name] = payload[:1]
        got = frames.decode(payload)
        # JSON has lists where the frame had tuples; the verdicts arrive as they were.
        assert got == ([frame[0], [], [frame[2][0]]] if payload[:1] == b"j" else frame), name
    assert codecs == {"plain": b"j", "surrogate": b"m", "big": b"m", "odd_key": b"m",
                      "rows": b"m", "decimal": b"p"}
    # And through a real writer process: every one a row.
    warnings: list[str] = []
    store = str(tmp_path / "events.sqlite3")
    sp = StoreProcess(store, warnings.append)
    sp.start()
    try:
        for frame in cases.values():
            sp.submit(list(frame[1]), frame[2][0])
        st = wait_until(lambda: (s := sp.status())["rows_written"] == 8 and s, 60,
                        what="eight rows")
    finally:
        sp.close()
    assert st["rows_dropped"] == 0 and not warnings
    db = open_store(store, readonly=True)
    got = db.search(Query(oldest_first=True))
    db.close()
    assert sorted(r["ref"] for r in got) == [f"e{i:06x}" for i in range(8)]
