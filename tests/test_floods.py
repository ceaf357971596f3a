"""Flood detection on real lab windows (ml/data/flows.jsonl, made by
ml/generate_flows.py from hping3, iperf3, ping and TCP clients): each flood
kind is caught at the rates the defaults promise, normal traffic never is."""

import json
from pathlib import Path

import pytest

from netsentinel.analyzer.floods import DEFAULT_THRESHOLDS, FloodDetector, merge_thresholds
from netsentinel.analyzer.flowmodel import FlowModel

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "ml" / "data" / "flows.jsonl"
ROWS = [json.loads(line) for line in DATA.read_text().splitlines()] if DATA.exists() else []
DETECT = FloodDetector(model=FlowModel.load())


def rows(label):
    return [r for r in ROWS if r["label"] == label]


def test_the_sample_data_covers_every_kind():
    assert {r["label"] for r in ROWS} >= set(DEFAULT_THRESHOLDS) | {"normal", "port_scan"}


@pytest.mark.parametrize("kind", sorted(DEFAULT_THRESHOLDS))
def test_each_flood_kind_fires_at_its_rates(kind):
    t = DEFAULT_THRESHOLDS[kind]
    fired = 0
    for r in rows(kind):
        ev = r["event"]
        rate = ev[t["counter"]] / ev["window_s"]
        v = DETECT.judge(ev)
        if rate >= t["critical"]:
            assert v is not None and v.level == "CRITICAL" and v.category == kind, (r["variant"], v)
            fired += 1
        elif rate >= t["high"]:
            assert v is not None and v.level in ("HIGH", "CRITICAL")
    assert fired > 0, f"no {kind} window reached the CRITICAL rate: regenerate the data"


def test_port_scans_are_told_from_syn_floods():
    fast = [r for r in rows("port_scan") if r["event"]["tcp_syn"] / r["event"]["window_s"] >= 300]
    assert fast
    for r in fast:
        assert DETECT.judge(r["event"]).category == "port_scan"


def test_normal_traffic_is_never_high_or_critical():
    normal = rows("normal")
    assert len({r["scenario"] for r in normal}) >= 4
    for r in normal:
        v = DETECT.judge(r["event"])
        assert v is None or v.level == "MEDIUM", (r["scenario"], r["variant"], v)


def test_threshold_overrides_are_validated():
    assert merge_thresholds({"icmp_flood": {"critical": 5000}})["icmp_flood"]["critical"] == 5000
    for bad, words in (({"nope": {}}, "unknown flood kind"),
                       ({"icmp_flood": {"critical": -1}}, "non-negative"),
                       ({"icmp_flood": {"high": 900, "critical": 10}}, "must not exceed"),
                       ({"icmp_flood": {"rate": 1}}, "unknown field")):
        with pytest.raises(ValueError, match=words):
            merge_thresholds(bad)


def test_aggregate_floods_are_rate_limited_never_banned():
    from netsentinel.analyzer.floods import AGG_THRESHOLDS, AggregateDetector
    d = AggregateDetector()
    syn = {"kind": "syn", "proto": "tcp", "dport": 8080, "phase": "crossed", "packets": 8000, "pps": 8000.0,
           "syncookies": {"passive_opens": 10}}
    v = d.judge(syn, 100.0)
    assert (v.level, v.category) == ("CRITICAL", "syn_flood") and "no address banned" in v.reason
    assert v.rule == {"id": "agg-syn-8080", "action": "ratelimit", "proto": "tcp", "dport": 8080,
                      "rate_pps": AGG_THRESHOLDS["syn"]["cap"], "reason": v.rule["reason"]}
    # A window whose SYNs mostly completed a handshake is load: HIGH, no rule.
    busy = {**syn, "phase": "window", "packets": 6000, "pps": 6000.0, "syncookies": {"passive_opens": 4010}}
    v = d.judge(busy, 101.0)
    assert v.level == "HIGH" and v.rule is None and "completed a handshake" in v.reason
    assert d.judge({**syn, "pps": 100.0}, 102.0) is None
    icmp = d.judge({"kind": "icmp", "proto": "icmp", "dport": None, "phase": "window", "packets": 9000,
                    "pps": 9000.0}, 103.0)
    assert icmp.rule["id"] == "agg-icmp-all" and "dport" not in icmp.rule
    assert d.judge({"kind": "udp", "proto": "udp", "dport": 53, "pps": 25000.0}, 104.0).rule is None  # HIGH
    spread = d.judge({"kind": "syn", "proto": "tcp", "dport": None, "phase": "window", "pps": 90000.0}, 105.0)
    assert spread.level == "CRITICAL" and spread.rule is None and "spread over ports" in spread.reason
