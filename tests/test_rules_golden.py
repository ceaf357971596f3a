"""The rule engine says exactly what it said before its fast paths: every
verdict field, reason text, rule_ids list, target, dedupe key, sweep
hosts, process history and the detectors' memory counts, for the bench's
events and a hostile mix (tests/rules_golden.py), against what commit
1829852's engine said (tests/data/rules_golden.json.gz)."""

from __future__ import annotations

import gzip
import json

import pytest

import rules_golden as g


@pytest.fixture(scope="module")
def recorded() -> dict:
    with gzip.open(g.GOLDEN, "rt", encoding="utf-8") as f:
        return json.load(f)


@pytest.mark.parametrize("stream", ["bench/default", "bench/low", "hostile/default", "hostile/low"])
def test_every_outcome_is_the_recorded_one(recorded, stream):
    events = g.streams()[stream]
    rows = g.run_stream(stream.split("/")[1], events)
    want = recorded[stream]
    assert len(rows) == len(want) == len(events) + 1
    for i, (ev, row) in enumerate(zip(events, rows)):
        assert g.digest(row) == want[i], f"event {i} of {stream}: {json.dumps(ev)} -> {json.dumps(row)}"
    assert rows[-1] == want[-1]   # what the bounded detectors hold and forgot
