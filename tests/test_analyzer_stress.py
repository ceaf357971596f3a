"""Stress: 100k replayed events through the real llm_analyzer.py while the
LLM stand-in takes 1 s per call. The reader must not wait for the LLM, the
cache and the rate cap must hold, every event must get exactly one verdict,
drops must be counted, and the process must exit on EOF.

The cache key is everything the model is shown, a process's recent
connections included (prompt.question_key), so a long-lived process's first
eight connections are eight different questions, and with 400 such
processes the first few hundred questions never recur. Those are the ones
the 40 calls of the rate cap answer (the queue is first come, first
served), so the workload also has what really repeats a question: a
short-lived health check started again and again (a new pid each time, one
connection, nothing in its history), whose identical questions must be
answered from the cache or joined while one is in flight."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

from analyzer_support import ANALYZER, analyzer_env, conn, read
from netsentinel.testing.llm_standins import StandinServer

N_EVENTS = 100_000
CAP = 40
WORKERS = 4
PORTS = [443, 8000, 8080, 22, 3306, 5432, 9000, 23]


N_CHECKS = 8          # health-check programs, each with one destination
CHECK_EVERY = 4       # every 4th connection is one of them


def _check(i: int) -> dict:
    """One run of a short-lived health check: a new pid, one connection."""
    j = i // CHECK_EVERY % N_CHECKS
    return conn(i / 1000, pid=100_000 + i, comm=f"check{j}", exe=f"/usr/local/bin/check{j}",
                cmdline=f"/usr/local/bin/check{j} --once", daddr=f"10.60.0.{j + 1}",
                dport=PORTS[j])


def _write_events(path) -> tuple[int, int]:
    """100k connections, 1 ms apart: from 400 long-lived processes of 40
    programs over 300 hosts x 8 ports, and (a quarter) from health checks
    started again and again; with some lines the analyzer must skip.
    Returns (connections, health-check runs)."""
    n_conn = n_checks = 0
    with open(path, "w") as f:
        f.write(json.dumps({"v": 1, "type": "startup", "ts": conn()["ts"]}) + "\n")
        for i in range(N_EVENTS):
            if i % 10_000 == 5:
                f.write("garbage line\n")
                continue
            if i % 10_000 == 7:
                f.write(json.dumps({"v": 1, "type": "lost", "ts": conn()["ts"], "count": 3,
                                    "total": 3}) + "\n")
                continue
            prog = i % 40
            ev = _check(i) if i % CHECK_EVERY == 0 else conn(
                i / 1000, pid=2000 + i % 400, comm=f"app{prog}", exe=f"/usr/bin/app{prog}",
                daddr=f"10.50.{i % 300 // 250}.{i % 250}", dport=PORTS[i % 8])
            f.write(json.dumps(ev) + "\n")
            n_conn += 1
            n_checks += i % CHECK_EVERY == 0
    return n_conn, n_checks


def _feed(p: subprocess.Popen, path, fed: list) -> None:
    """Replay at about 4000 events/s, like a busy loader: 2000 lines every 0.5 s."""
    with open(path) as f:
        batch = []
        for line in f:
            batch.append(line)
            if len(batch) == 2000:
                p.stdin.write("".join(batch))
                p.stdin.flush()
                fed[0] += len(batch)
                batch = []
                time.sleep(0.5)
        p.stdin.write("".join(batch))
        fed[0] += len(batch)
    fed.append(time.monotonic())
    p.stdin.close()


def test_100k_events_with_a_slow_llm(tmp_path):
    events = tmp_path / "events.jsonl"
    n_conn, n_checks = _write_events(events)
    records = tmp_path / "records"
    with StandinServer("medium", delay=1.0) as s:
        args = [sys.executable, str(ANALYZER), "--records", str(records),
                "--backend", "openai", "--base-url", f"{s.url}/v1", "--model", "standin-model",
                "--llm-scope", "all", "--max-calls-per-minute", str(CAP), "--workers", str(WORKERS),
                "--queue-size", "64", "--timeout", "5", "--drain-timeout", "3",
                "--status-interval", "0.5"]
        t0 = time.monotonic()
        p = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=analyzer_env(tmp_path))
        fed = [0]
        feeder = threading.Thread(target=_feed, args=(p, events, fed), daemon=True)
        feeder.start()
        lag = []   # (lines fed, events judged, LLM calls) while feeding
        while feeder.is_alive() and time.monotonic() - t0 < 80:
            st = read(records, "analyzer_status.json") if (records / "analyzer_status.json").exists() else None
            if st and st["running"]:
                lag.append((fed[0], st["input"]["lines"], st["llm"]["calls"]))
            time.sleep(0.5)
        feeder.join(timeout=5)
        err = p.stderr.read()
        p.wait(timeout=30)
        took = time.monotonic() - t0
        after_eof = time.monotonic() - fed[1]
        served = len(s.chat_requests())
        max_active = s.max_active

    assert p.returncode == 0, err[-3000:]
    # How long it took is printed, not asserted: speed belongs in bench/analyzer.py.
    status = read(records, "analyzer_status.json")
    llm = status["llm"]
    print(f"\n{took:.1f}s ({after_eof:.1f}s after EOF); {json.dumps(llm)}; lag samples {lag[-3:]}")

    # Every connection judged exactly once; the skipped lines counted.
    assert status["events_total"] == n_conn == sum(status["counts"].values())
    assert sum(status["verdict_sources"].values()) == n_conn
    assert status["input"]["invalid_lines"] == 10
    assert status["loader"]["lost_total"] == 30
    assert llm["submitted"] == status["verdict_sources"]["llm"] + status["verdict_sources"]["rules_fallback"]

    # The reader kept up with the feed (a few seconds of lines at most behind,
    # i.e. the status interval) although the LLM managed one call a second per worker.
    assert len(lag) >= 20
    assert all(read_ >= fed_ - 20_000 for fed_, read_, _ in lag), lag
    assert lag[-1][1] >= 80_000 and lag[-1][2] <= CAP

    # Rate cap and concurrency held; the stand-in saw exactly the counted calls.
    # At most CAP in any 60 s: exactly CAP when the run ends within a minute
    # of the first call; a loaded machine's longer run may open a second window.
    assert llm["calls"] == served and CAP <= served <= CAP * (1 + int(took // 60))
    assert max_active <= WORKERS
    assert llm["answered"] >= CAP - WORKERS and llm["rate_limited"] > 0

    # Repeats were answered by the cache, or joined the same question while
    # it waited for the model; the rest dropped, counted. Only true repeats
    # can be: the health checks' (8 questions, each asked about 3,000 times),
    # most of whose runs must not have needed a question of their own.
    assert llm["cache_hits"] > 1000 and llm["coalesced"] > 100
    assert llm["cache_hits"] + llm["coalesced"] > n_checks // 2
    assert llm["queue_dropped"] > 0
    assert status["verdict_sources"]["llm"] >= llm["cache_hits"]
    assert llm["queue_depth"] == 0

    logs = read(records, "dashboard_logs.json")
    assert len(logs["entries"]) == 500  # the window for people and scripts (log_max_entries)
    assert f"{n_conn} connections judged" in err and f"queue dropped {llm['queue_dropped']}" in err
