"""The rule engine says exactly what it said before its fast paths: every
verdict field, reason text, rule_ids list, target, dedupe key, sweep
hosts, process history and the detectors' memory counts, for the bench's
events and a hostile mix (tests/rules_golden.py), against what commit
1829852's engine said (tests/data/rules_golden.json.gz)."""

from __future__ import annotations

import gzip
import json
import random
from collections import OrderedDict

import pytest

import rules_golden as g
from netsentinel.analyzer.reasons import _EVENT_FIELDS, _event_value, render, template


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


def _joined(reason: str, ev: dict, fields: dict) -> str:
    """render() as it was: the pieces joined, str() of each value."""
    parts, rest = template(reason)[:2]
    out = []
    for text, name in parts:
        v = fields[name] if name in fields else ev.get(name) if name in _EVENT_FIELDS \
            else _event_value(ev, name)
        out += (text, str(v))
    return "".join(out + [rest])


@pytest.mark.parametrize("reason", ["{comm} -> {daddr}:{dport}", "no fields", "", "{{comm}} {x}",
                                    "}{ {} {port_label}{socket}{why}", "{exe}{{{pid}}}}", "é{comm}ü"])
def test_render_is_the_pieces_joined(reason):
    evs = [{"comm": "nc", "daddr": "10.0.0.1", "dport": 23, "pid": 7, "exe": None},
           {"comm": "{daddr}", "dport": True, "family": "ipv4", "sock_type": 3, "pid": 2 ** 70},
           {"comm": ["x"], "exe": {"a": 1}, "dport": 1.5}]
    for ev in evs:
        for fields in ({}, {"why": "ip 1.2.3.4", "comm": None}, {"port_label": "", "x": 0.1}):
            assert render(template(reason), ev, fields) == _joined(reason, ev, fields)


def test_command_lines_remembered_stay_bounded_and_say_what_the_regex_says():
    from netsentinel.analyzer.rule import MAX_CMDLINE_TEXT, MAX_CMDLINES
    from netsentinel.analyzer.rules import DEFAULT_RULES_PATH, RuleEngine
    rule = next(r for r in RuleEngine(DEFAULT_RULES_PATH).rules if r.cmdline_re is not None)
    texts = [f"xmrig -o stratum+tcp://p{i}:3333" if i % 3 == 0 else f"app --n {i}"
             for i in range(MAX_CMDLINES + 50)] + ["a" * (MAX_CMDLINE_TEXT + 1) + " --randomx"]
    for text in texts + texts[:100]:
        assert rule._cmdline_hit(text) == (rule.cmdline_re.search(text) is not None), text
        assert len(rule._cmdline_hits) <= MAX_CMDLINES
    assert texts[-1] not in rule._cmdline_hits   # too long to keep: searched each time


class _PlainWindow:
    """DistinctWindow as it was (1829852): the oldest pair looked at on
    every sighting; what the window's shortcut must agree with."""

    def __init__(self, max_groups: int, max_values: int):
        self.max_groups, self.max_values, self.groups = max_groups, max_values, OrderedDict()
        self.evicted = self.values_evicted = 0

    def observe(self, group, t, sub, value, window) -> int:
        if group not in self.groups:
            self.groups[group] = (OrderedDict(), {})
            if len(self.groups) > self.max_groups:
                self.groups.popitem(last=False)
                self.evicted += 1
        self.groups.move_to_end(group)
        seen, per_sub = self.groups[group]
        if (sub, value) not in seen:
            per_sub[sub] = per_sub.get(sub, 0) + 1
        seen[(sub, value)] = t
        seen.move_to_end((sub, value))
        while seen:
            (old_sub, _), old_t = next(iter(seen.items()))
            full = len(seen) > self.max_values
            if old_t >= t - window and not full:
                break
            seen.popitem(last=False)
            self.values_evicted += full
            per_sub[old_sub] -= 1
            if not per_sub[old_sub]:
                del per_sub[old_sub]
        return per_sub.get(sub, 0)


@pytest.mark.parametrize("seed", range(6))
def test_scan_windows_count_as_the_plain_window_even_with_times_out_of_order(seed):
    from netsentinel.analyzer.scan import DistinctWindow
    rng = random.Random(seed)
    fast, plain = DistinctWindow(5, 7), _PlainWindow(5, 7)
    t = 1000.0
    for i in range(20000):
        # mostly forward in time, sometimes back (a replayed or merged stream), bursts and gaps
        t += rng.choice([0.0, 0.01, 0.01, 0.1, 0.1, 0.5, 40.0]) if rng.random() > .05 \
            else -rng.choice([1, 30, 90])
        group = (("uid", "comm"), (rng.randrange(2), rng.choice("abc")))
        sub, value, window = rng.choice(["h1", "h2", None]), rng.randrange(12), rng.choice([5.0, 60.0])
        assert fast.observe(group, t, sub, value, window) == plain.observe(group, t, sub, value, window), i
        if i % 97 == 0:
            assert fast.sample(group, sub) == sorted(
                [v for s, v in reversed(plain.groups[group][0]) if s == sub][:12])
    assert (fast.evicted, fast.values_evicted, len(fast)) == \
        (plain.evicted, plain.values_evicted, len(plain.groups))
    assert fast.values_evicted and fast.evicted   # the bounds were reached
