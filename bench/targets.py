#!/usr/bin/env python3
"""bench/targets.py - each performance target of the issues beside its
measurement, from the results `make bench` collects (docs/bench-results.json).

    .venv/bin/python bench/targets.py                      # docs/bench-results.json
    .venv/bin/python bench/targets.py /tmp/results.json

bench/run_all.py prints this table at its end. A target whose benchmark was
not run (or whose result lacks the figure) says so: nothing is assumed met.
The figures are the ones docs/benchmarks.md quotes; the load average of
each run is in its JSON (ratios side by side in one run are what compare)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parent.parent


def _rows(r: dict | None) -> list[dict]:
    return (r or {}).get("results") or []


def _summary(r: dict | None, key: str, stat: str):
    return ((r or {}).get("summary") or {}).get(key, {}).get(stat)


def xdp_floor(res: dict):
    """The paired bench (floor and filter swapped under one flood, ratios
    per round) where it ran, else drop_rate's rows."""
    pair = [x for x in _rows(res.get("xdp_pair")) if x.get("program") == "current"
            and x.get("ratio_to_floor") is not None]
    if pair:
        worst = min(x["ratio_to_floor"] for x in pair)
        return worst, f"{worst:.2f}x, median of paired rounds (worst of {len(pair)} sizes, xdp_pair)"
    rows = [x for x in _rows(res.get("drop_rate")) if x.get("method") == "xdp"
            and x.get("drops_ratio_to_floor") is not None]
    if not rows:
        return None
    worst = min(rows, key=lambda x: x["drops_ratio_to_floor"])
    return worst["drops_ratio_to_floor"], f"{worst['drops_ratio_to_floor']:.2f}x (worst of {len(rows)} sizes)"


def store_insert(res: dict):
    rows = [x for x in (res.get("eventstore") or {}).get("insert") or [] if x.get("path") == "process"
            and x.get("engine", "sqlite") == "sqlite" and x.get("rows_per_s")]
    if not rows:
        return None
    v = min(x["rows_per_s"] for x in rows)
    return v, f"{v:,} rows/s (the writer process, SQLite)"


def _flood_capture(res: dict) -> list[dict]:
    r = res.get("event_capture_flood")
    return [x for x in _rows(r) if x.get("rate_target") == "max"]


def capture_loss(res: dict):
    rows = _flood_capture(res)
    if not rows:
        return None
    worst = max(x["loss_pct"] for x in rows)
    return worst, f"{worst:g} % lost, 16 processes connecting flat out"


def capture_ratio(res: dict):
    rows = [x for x in _flood_capture(res) + _rows(res.get("event_capture"))
            if x.get("us_ratio_to_bpftrace") is not None]
    if not rows:
        return None
    worst = max(x["us_ratio_to_bpftrace"] for x in rows)
    return worst, f"{worst:.2f}x bpftrace's CPU per event (worst step)"


def ban_under_flood(res: dict):
    """The tail, p99: "a ban reaches the kernel within 100 ms" is every ban
    (it was p90 until session 6, when the tail was cut)."""
    p99 = _summary(res.get("ban_latency_flood"), "drop_after_write_ms", "p99")
    return None if p99 is None else (p99, f"p99 {p99:.0f} ms after the write")


def burst_over_50k(res: dict):
    """From the first of the 20 writes until the last ban drops (drop_ms)."""
    p90 = _summary(res.get("ban_latency_preload"), "drop_ms", "p90")
    return None if p90 is None else (p90, f"p90 {p90:.0f} ms from the first write")


def idle_50k(res: dict):
    v = (res.get("ban_latency_preload") or {}).get("idle_cpu_pct")
    return None if v is None else (v, f"{v:g} % of a core")


def _analyzer(res: dict, case: str):
    for x in _rows(res.get("analyzer")):
        if x.get("case") == case:
            return x.get("events_per_s")
    return None


def analyzer_rate(case: str):
    def figure(res: dict):
        v = _analyzer(res, case)
        return None if v is None else (v, f"{v:,.0f} events/s ({case})")
    return figure


def analyzer_flat(res: dict):
    empty, full = _analyzer(res, "rules, records/ empty"), _analyzer(res, "rules, records/ full")
    if not empty or full is None:
        return None
    return full / empty, f"{full / empty:.2f} (records/ full vs empty)"


def dashboard_1m(res: dict):
    rows = [x for x in _rows(res.get("dashboard_render")) if x.get("events") == 1_000_000
            and x.get("median_s") is not None]
    if not rows:
        return None
    worst = max(rows, key=lambda x: x["median_s"])
    return worst["median_s"], f"{worst['median_s']:.2f} s ({worst.get('page')})"


# (issue, target, check(result) -> bool, figure(results) -> (value, text) | None)
TARGETS: list[tuple[str, str, Callable, Callable]] = [
    ("19", "XDP drop rate >= 0.95x a bare XDP_DROP program", lambda v: v >= 0.95, xdp_floor),
    ("19", "event capture: no loss at 16 flat-out connecting processes", lambda v: v == 0, capture_loss),
    ("19", "event capture: CPU per event within 3x bpftrace", lambda v: v <= 3, capture_ratio),
    ("19", "a ban reaches the kernel within 100 ms under that flood", lambda v: v <= 100, ban_under_flood),
    ("19", "20 bans over 50,000 applied within 0.3 s", lambda v: v <= 300, burst_over_50k),
    ("19", "idle loader CPU <= 2 % with 50,000 bans", lambda v: v <= 2, idle_50k),
    ("19", "analyzer >= 25,000 events/s on the rules path", lambda v: v >= 25_000,
     analyzer_rate("rules, records/ empty")),
    ("19", "the same without the event store", lambda v: v >= 25_000,
     analyzer_rate("rules, records/ empty, --no-store")),
    ("19", "analyzer flat within 10 % with records/ full", lambda v: v >= 0.9, analyzer_flat),
    ("15", "every dashboard page under 1 s at 1,000,000 events", lambda v: v < 1, dashboard_1m),
    ("15", "the store's writer keeps 50,000 events/s", lambda v: v >= 50_000, store_insert),
]


def table(results: dict) -> list[list[str]]:
    out = []
    for issue, target, ok, figure in TARGETS:
        try:
            got = figure(results)
        except (KeyError, TypeError, ValueError):   # a result of another shape: say so
            got = None
        if got is None:
            out.append([f"#{issue}", target, "not measured in these results", "-"])
        else:
            out.append([f"#{issue}", target, got[1], "met" if ok(got[0]) else "NOT met"])
    return out


def render(rows: list[list[str]]) -> str:
    head = ["issue", "target", "measured", ""]
    widths = [max(len(r[i]) for r in rows + [head]) for i in range(4)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(head, widths)),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    path = Path(argv[1]) if len(argv) > 1 else ROOT / "docs" / "bench-results.json"
    try:
        results = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        print(f"bench/targets.py: cannot read {path}: {e}", file=sys.stderr)
        return 2
    print(render(table(results)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
