"""The analyzer's inbound-scan rule on the loader's `drops` events (issue 17,
slice 3): breadth over a window, not rate; one threat per source; hostile
rows ignored. The kernel side is in test_kernel_stack.py."""

from __future__ import annotations

import json

from analyzer_support import lines, pending, run_analyzer, ts
from netsentinel.analyzer.stackscan import StackScanDetector


def drops(at: float, src: str, ports, reason: str = "NO_SOCKET", dst: str = "10.9.0.1",
          flags: int = 0x02) -> dict:
    return {"v": 1, "type": "drops", "ts": ts(at), "interval_s": 2.0, "total": len(ports),
            "reasons": {reason: len(ports)}, "sites": [], "flows_more": 0,
            "flows": [{"reason": reason, "family": "ipv4", "proto": 6, "src": src, "dst": dst,
                       "dport": p, "tcp_flags": flags, "netns": None, "count": 1} for p in ports],
            "xdp": {"ours": 0, "seen_as_skb": 0, "added": 0, "mode": None},
            "missed": {}, "detail_off_reason": None}


def test_a_slow_scan_is_found_by_breadth():
    d = StackScanDetector()
    # One port every 10 s: far below any flood threshold.
    found = [v for i in range(25) for v in d.judge(drops(i * 10.0, "198.51.100.7", [1000 + i]))]
    assert len(found) == 1
    (v,) = found
    assert v["level"] == "HIGH" and v["category"] == "port_scan"
    assert v["evidence"]["distinct_ports"] == 20 and v["evidence"]["src"] == "198.51.100.7"


def test_many_ports_escalate_once_and_other_reasons_do_not_count():
    d = StackScanDetector()
    assert d.judge(drops(0, "198.51.100.8", range(100), reason="NETFILTER_DROP")) == []
    levels = [v["level"] for i in range(3) for v in d.judge(drops(i, "198.51.100.8",
                                                                  range(i * 100, i * 100 + 100)))]
    assert levels == ["HIGH", "CRITICAL"]


def test_local_and_malformed_rows_and_backscatter_are_ignored():
    d = StackScanDetector()
    # RSTs and SYN-ACKs to closed ports: replies to someone else's packets.
    assert d.judge(drops(0, "198.51.100.9", range(50), flags=0x04)) == []
    assert d.judge(drops(1, "198.51.100.9", range(50, 100), flags=0x12)) == []
    ev = drops(0, "127.0.0.1", range(50), dst="127.0.0.2")
    ev["flows"] += [{"reason": "NO_SOCKET", "src": 5, "dst": "x", "dport": "80"}, "junk",
                    *drops(0, "10.9.0.1", range(50))["flows"]]   # src == dst
    assert d.judge(ev) == []


def test_the_analyzer_records_one_threat_per_scanning_source(tmp_path):
    events = [drops(i, "203.0.113.5", range(i * 10, i * 10 + 10)) for i in range(5)]
    r = run_analyzer(tmp_path, ["--backend", "rules"], lines(events))
    assert r.returncode == 0, r.stderr
    threats = pending(tmp_path / "records")
    assert len(threats) == 1, json.dumps(threats)[:500]
    (t,) = threats
    assert (t["target"], t["category"], t["level"]) == ("203.0.113.5", "port_scan", "HIGH")
    assert t["rule_ids"] == ["stack:inbound_scan"] and t["event"]["type"] == "drops"


def test_a_drops_event_with_a_bad_time_is_skipped_with_a_reason(tmp_path):
    bad = drops(0, "203.0.113.9", range(30))
    bad["ts"] = "yesterday"
    events = [bad, drops(1, "203.0.113.9", range(30, 50))]
    r = run_analyzer(tmp_path, ["--backend", "rules"], lines(events))
    assert r.returncode == 0, r.stderr
    # Refused with its reason (by the analyzer's input checks, before the
    # stack-scan rule sees it) and kept aside.
    assert "yesterday" in r.stderr and "skipped" in r.stderr
    # The good event alone (20 ports) still makes the threat.
    (t,) = pending(tmp_path / "records")
    assert t["target"] == "203.0.113.9"
