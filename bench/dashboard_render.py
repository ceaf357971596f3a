#!/usr/bin/env python3
"""bench/dashboard_render.py - how long the dashboard's pages take to render
with a small and a big history, in the same run.

For each size (default 10,000 and 1,000,000 stored events, bench/gen_day.py's
day: verdicts spread over the last 24 h, flows and scanners included) with
300 pending threats and 10,000 bans in records/, each page is rendered by
Streamlit's AppTest (the page script run by the server for one browser
refresh, without the browser's drawing) and timed: median of 5 after a
warm-up. Pages: Overview (last hour and last 24 h), Events (one page of 500),
Review (300 pending threats), History following one process over 24 h (the
investigation view). Target: under 1 s each at 1M on this machine.
Beside the wall time, the CPU time this process spent on the render (the
page script runs in one of its threads): on a machine shared with other
work the wall time grows with the load, the CPU time much less.

USAGE: .venv/bin/python bench/dashboard_render.py [--quick] [--sizes N,N]
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

from common import ROOT, Progress, emit, parser  # noqa: E402
from gen_day import bans, fill_store, pending_threats  # noqa: E402
from netsentinel.records import BANNED_IPS, EVENTS_DB, PENDING_THREATS  # noqa: E402
from netsentinel.store import RecordsStore  # noqa: E402

EPILOG = """examples:
  .venv/bin/python bench/dashboard_render.py                    # 10,000 and 1,000,000 events (~5 min)
  .venv/bin/python bench/dashboard_render.py --quick            # 1,000 and 5,000, one run each (CI)
  .venv/bin/python bench/dashboard_render.py --sizes 10000,200000
"""
TOKEN = "bench-token-0123456789abcdef"
RUNS = 5
# (label, page, widget changes after opening it)
PAGES = [("Overview, last hour", "Overview", []),
         ("Overview, last 24 h", "Overview", [("selectbox", "overview_range", "last 24 h")]),
         ("Events, one page", "Events", []),
         ("Review, 300 pending", "Review", []),
         ("History, one process over 24 h", "History", [("text_input", "hist_follow", "nmap")])]


def _open(page: str, changes: list):
    from streamlit.testing.v1 import AppTest
    at = AppTest.from_file(str(ROOT / "dashboard.py"), default_timeout=120)
    at.query_params["token"] = TOKEN
    at.run()
    if page != "Overview":
        at.radio(key="nav").set_value(page).run()
    for kind, key, value in changes:
        getattr(at, kind)(key=key).set_value(value).run()
    if at.exception:
        raise RuntimeError(f"{page}: {at.exception}")
    return at


def _time_page(page: str, changes: list, runs: int) -> tuple[float, float]:
    """Median seconds of one rerun of the page as it stands (after a
    warm-up): wall time, and this process's CPU time."""
    at = _open(page, changes)
    times, cpu = [], []
    for _ in range(runs):
        t0, c0 = time.perf_counter(), time.process_time()
        at.run()
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
        if at.exception:
            raise RuntimeError(f"{page}: {at.exception}")
    return statistics.median(times), statistics.median(cpu)


def main(argv: list[str] | None = None) -> int:
    p = parser("dashboard_render", __doc__, EPILOG)
    p.add_argument("--sizes", default=None, help="stored events per case, comma-separated")
    args = p.parse_args(argv)
    sizes = [int(s) for s in (args.sizes or ("1000,5000" if args.quick else "10000,1000000")).split(",")]
    runs = 1 if args.quick else RUNS
    started, say = time.time(), Progress("dashboard_render")
    results = []
    for n in sizes:
        with tempfile.TemporaryDirectory(prefix="ns-render-") as tmp:
            records = Path(tmp) / "records"
            store = RecordsStore(records)
            store.write(PENDING_THREATS, pending_threats(300))
            store.write(BANNED_IPS, bans(10_000))
            say(f"{n:,} events: filling the store")
            rows = fill_store(str(records / EVENTS_DB), n)
            os.environ.update(NETSENTINEL_RECORDS=str(records),
                              NETSENTINEL_CONFIG=str(Path(tmp) / "filter_config.json"),
                              NETSENTINEL_DASHBOARD_REFRESH="0", NETSENTINEL_DASHBOARD_TOKEN=TOKEN)
            load = os.getloadavg()[0]
            for label, page, changes in PAGES:
                s, cpu = _time_page(page, changes, runs)
                say(f"{n:,} events: {label}: {s * 1000:.0f} ms ({cpu * 1000:.0f} ms CPU)")
                results.append({"events": n, "rows": rows, "page": label, "median_s": round(s, 4),
                                "median_cpu_s": round(cpu, 4), "load1": round(load, 2)})
    rows_out = [[r["page"], f"{r['events']:,}", f"{r['median_s'] * 1000:.0f} ms",
                 f"{r['median_cpu_s'] * 1000:.0f} ms", f"{r['load1']:.1f}"] for r in results]
    emit("dashboard_render", args.quick, {"sizes": sizes, "runs": runs}, results, started,
         ["page", "events", "median render", "CPU", "load (1 min)"], rows_out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
