"""The analyzer reads stdin by blocks (analyzer/reader.py): the lines one
read completed are judged together and recorded in one go. That changes
nothing a person or a program can see: the same lines however the pipe
cuts them, the same verdicts, refusals (same words, same line numbers)
and records in the same order as judging line by line, the sink's bounds
counted the same, and a line that arrives alone judged and recorded at
once, with stdin still open."""

from __future__ import annotations

import io
import json
import os
import queue
import random
import threading

import orjson

from analyzer_support import conn, lines, start_analyzer, status_of, wait_for
from test_analyzer_hostile import HOSTILE_LINES, flow

from netsentinel.analyzer import sinks
from netsentinel.eventstore import process
from netsentinel.analyzer.inputs import read_blocks, read_lines
from netsentinel.analyzer.pipeline import Analyzer
from netsentinel.analyzer.rules import RuleEngine
from netsentinel.analyzer.settings import SettingsWatcher
from netsentinel.llm.config import validate_llm_config
from netsentinel.store import RecordsStore
from netsentinel.whitelist import WhitelistFile


class _Store:
    """What the sink hands the event store's writer, kept in order."""

    def __init__(self):
        self.entries: list = []

    def submit_packed(self, packed):
        batch, n = packed   # StoreProcess.pack's (JSON array, how many)
        got = orjson.loads(batch) if isinstance(batch, bytes) else batch
        assert len(got) == n
        self.entries += got


def _queued(sp: process.StoreProcess) -> list:
    """The entries a StoreProcess not started holds, oldest first."""
    return sp._out.entries()


class _Pieces:
    """A binary stream whose read1 hands out what a pipe might: random sizes."""

    def __init__(self, data: bytes, rng: random.Random):
        self.data, self.pos, self.rng = data, 0, rng

    def read1(self, n: int) -> bytes:
        size = min(n, self.rng.choice([1, 7, 50, 300, 4096, n]))
        out = self.data[self.pos:self.pos + size]
        self.pos += len(out)
        return out


class _LinesOnly:
    """The same bytes through readline only (read_blocks' other path)."""

    def __init__(self, data: bytes):
        self.readline = io.BytesIO(data).readline


def test_blocks_are_the_same_lines_however_the_pipe_cuts_them():
    rng = random.Random(7)
    parts = []
    for _ in range(400):
        k = rng.random()
        parts.append(b"" if k < 0.1 else b"x" * rng.randint(90, 130) if k < 0.2   # around the cap
                     else bytes(rng.choice(b"ab{}\r ") for _ in range(rng.randint(1, 60))))
    for tail in (b"", b"no newline at the end", b"y" * 500):
        data = b"\n".join(parts) + b"\n" + tail
        want = list(read_lines(_LinesOnly(data), max_bytes=100))
        assert sum(isinstance(x, int) for x in want) > 10   # over-long lines, as their lengths
        for seed in range(20):
            blocks = list(read_blocks(_Pieces(data, random.Random(seed)), max_bytes=100))
            assert all(blocks) and [x for b in blocks for x in b] == want


def test_a_line_that_arrives_alone_is_a_block_at_once():
    r, w = os.pipe()
    got: queue.Queue = queue.Queue()
    with os.fdopen(r, "rb") as stream:
        t = threading.Thread(target=lambda: [got.put(b) for b in read_blocks(stream)], daemon=True)
        t.start()
        os.write(w, b'{"first": 1}\n{"sec')   # a line and the start of the next
        assert got.get(timeout=10) == [b'{"first": 1}\n']
        os.write(w, b'ond": 2}\n')
        assert got.get(timeout=10) == [b'{"second": 2}\n']
        os.close(w)
        t.join(10)
    assert got.empty()


def _analyzer(tmp_path, name: str) -> Analyzer:
    (tmp_path / "filter_config.json").write_text("{}")
    store = RecordsStore(tmp_path / name)
    settings = SettingsWatcher(store, validate_llm_config({"backend": "rules"}), lambda m: None)
    a = Analyzer(store, settings, RuleEngine(), WhitelistFile(str(tmp_path / "filter_config.json")),
                 warn=lambda m: None, history=False)
    a.sink.events = _Store()   # every verdict handed over as to the event store (compared)
    return a


def _seen(a: Analyzer) -> dict:
    drop = ("id", "ts")
    return {"entries": [{k: v for k, v in e.items() if k not in drop} for e in a.sink.events.entries],
            "rejected": [{k: v for k, v in r.items() if k != "ts"} for r in a.sink._rejected],
            "threats": {k: v for k, v in a.sink._threats.items()},
            "counts": a.counts, "sources": a.sources, "input": a.input,
            "talked": [(dst, port) for dst, (_, port) in a.inbound._talked.items()]}  # not the clock


def test_blocks_record_what_line_by_line_records_in_the_same_order(tmp_path):
    flood = flow(src="203.0.113.9", pps=90000.0, packets=90000, tcp=90000, tcp_syn=90000, icmp=0,
                 icmp_echo=0)
    brute = {"v": 1, "type": "accepts", "ts": conn()["ts"], "interval_s": 2,
             "sources": [{"src": "198.51.100.7", "port": 22, "count": 2000}]}
    others = [json.dumps(flood), json.dumps(brute), "", "   ", *(t for t, _ in HOSTILE_LINES[:6])]
    stream = []
    for i in range(600):   # scans, a known-bad destination, telnet, plain traffic
        stream.append(json.dumps(conn(i * 0.05, pid=100 + i % 7, comm=f"p{i % 7}", dport=(
            [443, 23, 4444, 20000 + i][i % 4]), daddr=["10.0.0.5", "198.51.100.200"][i % 5 == 0])))
        if i % 40 == 3:
            stream.append(others[i // 40 % len(others)])
    data = lines(stream).encode()
    by_line = _analyzer(tmp_path, "one")
    for line in read_lines(io.BytesIO(data)):
        by_line.handle_line(line)
    by_block = _analyzer(tmp_path, "blocks")
    by_block.run(_Pieces(data, random.Random(3)))
    one, blocks = _seen(by_line), _seen(by_block)
    assert one == blocks
    levels = {e["level"] for e in one["entries"]}
    assert {"INFO", "HIGH", "CRITICAL"} <= levels and len(one["rejected"]) >= 6
    kinds = [e["event"]["type"] for e in one["entries"]]
    assert "flow" in kinds and "accepts" in kinds   # other events' records sit among the connections'


def test_the_sink_bounds_count_a_batch_as_they_count_one_by_one(tmp_path, monkeypatch):
    monkeypatch.setattr(process, "MAX_QUEUED", 5)
    monkeypatch.setattr(sinks, "HISTORY_BUF_MAX", 4)
    store = RecordsStore(tmp_path / "records")
    cfg = validate_llm_config({"backend": "rules"})
    made, stored = [], []
    for batch in (False, True):
        sink = sinks.RecordsSink(store, lambda: cfg, lambda: None, lambda m: None, history=True)
        sink.events = process.StoreProcess(str(tmp_path / "events.sqlite3"), lambda m: None)
        entries = [{"level": "INFO", "n": i} for i in range(9)]
        if batch:
            sink.add_many(entries[:2], ())
            sink.add_many(entries[2:4], ())
            sink.add_many(entries[4:], ())
        else:
            for e in entries:
                sink.add(e, None)
        made.append((sink._history_buf, sink.history_dropped, list(sink._window)))
        stored.append((_queued(sink.events), sink.events.rows_dropped))
    assert made[0] == made[1]
    assert made[0][1] == 5
    # The store's queue drops the oldest whole batches (as the analyzer
    # recorded them): every verdict is kept or counted, the newest kept.
    assert stored[0] == (entries[4:], 4) and stored[1] == (entries[4:], 4)


def test_a_line_alone_is_judged_and_recorded_with_stdin_open(tmp_path):
    records = tmp_path / "records"
    proc = start_analyzer(tmp_path, ["--backend", "rules", "--status-interval", "0.2", "--no-store"])
    try:
        for n in (1, 2):
            proc.stdin.write(lines([conn(n, dport=23)]))
            proc.stdin.flush()
            assert wait_for(lambda: status_of(records).get("events_total") == n, timeout=30)
            assert status_of(records)["counts"]["HIGH"] == n
        proc.stdin.close()
        assert proc.wait(timeout=60) == 0
    finally:
        proc.kill()
