"""bench/targets.py: each issue target beside its measurement, from the
results run_all.py collects; nothing assumed met when not measured."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

import targets  # noqa: E402


def _status(rows, text):
    (row,) = [r for r in rows if r[1].startswith(text)]
    return row[2], row[3]


def test_met_not_met_and_not_measured():
    results = {
        "drop_rate": {"results": [{"method": "xdp", "prefixes": 1, "drops_ratio_to_floor": 0.97},
                                  {"method": "xdp", "prefixes": 100000, "drops_ratio_to_floor": 0.91},
                                  {"method": "nft", "prefixes": 1, "drops_ratio_to_floor": 0.2}]},
        "event_capture_flood": {"results": [{"rate_target": "max", "loss_pct": 0.0,
                                             "us_ratio_to_bpftrace": 1.4}]},
        "ban_latency_flood": {"summary": {"drop_after_write_ms": {"p90": 61.0, "p99": 136.0}}},
        "eventstore": {"insert": [{"engine": "sqlite", "path": "process", "rows_per_s": 23000},
                                  {"engine": "sqlite", "path": "in-process", "rows_per_s": 60000}]},
        "analyzer": {"results": [{"case": "rules, records/ empty", "events_per_s": 20000},
                                 {"case": "rules, records/ full", "events_per_s": 19000}]},
    }
    rows = targets.table(results)
    assert _status(rows, "XDP drop rate") == ("0.91x (worst of 2 sizes)", "NOT met")
    assert _status(rows, "event capture: no loss")[1] == "met"
    assert _status(rows, "event capture: CPU per event")[1] == "met"
    # The tail is the target's figure: every ban within 100 ms.
    assert _status(rows, "a ban reaches") == ("p99 136 ms after the write", "NOT met")
    assert _status(rows, "analyzer >= 25,000")[1] == "NOT met"
    assert _status(rows, "analyzer flat") == ("0.95 (records/ full vs empty)", "met")
    assert _status(rows, "idle loader CPU") == ("not measured in these results", "-")
    assert _status(rows, "the store's writer") == ("23,000 rows/s (the writer process, SQLite)", "NOT met")
    assert "NOT met" in targets.render(rows)


def test_a_result_of_another_shape_is_not_measured():
    rows = targets.table({"drop_rate": {"results": [{"method": "xdp", "drops_ratio_to_floor": "x"}]}})
    assert _status(rows, "XDP drop rate") == ("not measured in these results", "-")
