"""bench/store_insert.py - how many verdicts a second the event store's
writer takes (bench/eventstore.py's insert row; issue 15's target: 50,000/s).

The same N verdicts (gen_day.py's day, made before the clock starts) go
into a fresh store twice, side by side:
  process     the analyzer's path: eventstore.process.StoreProcess, fed in
              batches of 5,000 like the analyzer's flusher, until its writer
              process reports every row written; timed from when a first
              batch (WARM_UP verdicts, not counted) is written: the writer's
              start (Python, imports, the store's creation) is not its rate
  in-process  row_of + StoreWriter.add_rows on one thread (the path before
              the writer had a process of its own)
For each: rows/s, the writer's CPU per row, and for the process path the
CPU per row left on the feeding (analyzer's) side."""

from __future__ import annotations

import os
import resource
import time

from gen_day import day, entry
from netsentinel.eventstore import Retention
from netsentinel.eventstore.process import StoreProcess
from netsentinel.eventstore.rows import row_of
from netsentinel.eventstore.writer import StoreWriter
from netsentinel.testing.lab import wait_until

BATCH = 5000
WARM_UP = 2000


def _cpu() -> float:
    u = resource.getrusage(resource.RUSAGE_SELF)
    return u.ru_utime + u.ru_stime


def verdicts(n: int, end: float) -> list[dict]:
    events = (e for e in day(n * 2, seed=13, end=end) if e[1] is not None)
    return [entry(i, ev, v) for i, (ev, v) in zip(range(n), events)]


def through_process(dsn: str, ents: list[dict], progress) -> dict:
    sp = StoreProcess(dsn, progress, Retention(max_age_days=3650, max_bytes=1 << 40))
    sp.start()
    warm = ents[:WARM_UP]
    sp.submit([], warm)

    def done(n: int):
        return (s := sp.status())["rows_written"] + s["rows_dropped"] >= n and s

    base = wait_until(lambda: done(len(warm)), 60, interval=0.02, what="the warm-up batch written")
    t, cpu = time.perf_counter(), _cpu()
    for i in range(0, len(ents), BATCH):
        sp.submit([], ents[i:i + BATCH])
    st = wait_until(lambda: done(len(warm) + len(ents)), 1800, interval=0.02,
                    what="every row written")
    took, fed_cpu = time.perf_counter() - t, _cpu() - cpu
    sp.close()
    written = st["rows_written"] - base["rows_written"]
    return {"path": "process", "rows": written, "rows_dropped": st["rows_dropped"],
            "seconds": round(took, 2), "rows_per_s": int(written / took),
            "writer_cpu_us_per_row": round((st["writer_cpu_s"] - base["writer_cpu_s"]) * 1e6
                                           / len(ents), 1),
            "feeder_cpu_us_per_row": round(fed_cpu * 1e6 / len(ents), 1),
            "load1": round(os.getloadavg()[0], 2)}


def in_process(dsn: str, ents: list[dict], progress) -> dict:
    w = StoreWriter(dsn, progress, Retention(max_age_days=3650, max_bytes=1 << 40))
    w.flush()  # open and migrate before the clock starts, as the process path does
    t, cpu = time.perf_counter(), _cpu()
    for i in range(0, len(ents), BATCH):
        w.add([row_of(e) for e in ents[i:i + BATCH]])
        w.flush()
    took, used = time.perf_counter() - t, _cpu() - cpu
    st = w.status()
    w.close()
    return {"path": "in-process", "rows": st["rows_written"], "rows_dropped": st["rows_dropped"],
            "seconds": round(took, 2), "rows_per_s": int(st["rows_written"] / took),
            "writer_cpu_us_per_row": round(used * 1e6 / len(ents), 1), "feeder_cpu_us_per_row": None,
            "load1": round(os.getloadavg()[0], 2)}


def run_insert(engine: str, new_dsn, n: int, end: float, progress) -> list[dict]:
    """Both paths on fresh stores of one engine (new_dsn(tag) makes one)."""
    ents = verdicts(n, end)
    out = []
    for fn in (through_process, in_process):
        r = {"engine": engine, **fn(new_dsn(fn.__name__), ents, progress)}
        progress(f"insert, {engine}, {r['path']}: {r['rows_per_s']:,} rows/s "
                 f"(writer {r['writer_cpu_us_per_row']} us/row, load {r['load1']})")
        out.append(r)
    return out
