"""Outbound UDP judgement (issue 12), table-driven from tests/samples/udp/*.json:
each case is a sequence of `udp` events (as the loader writes them, schema
checked) run through a fresh analyzer/udp.UdpJudge; the case says whether the
rule fires and at which level. Plus hostile events and the rules file."""

from __future__ import annotations

import json
import re
from pathlib import Path

import jsonschema
import pytest

from analyzer_support import lines, pending, read, run_analyzer
from netsentinel.analyzer.eventcheck import BadLine
from netsentinel.analyzer.udp import UdpJudge, UdpRulesError, load_udp_rules
from netsentinel.events import load_schema

VALIDATOR = jsonschema.Draft202012Validator(load_schema())   # one compile: cases have hundreds of events
SAMPLES = Path(__file__).parent / "samples" / "udp"
CFG = {"scan_window_seconds": 60.0, "scan_port_threshold": 15, "scan_host_threshold": 20}
BASE = {"pid": 4242, "ppid": 1, "uid": 1000, "comm": "x", "exe": "/usr/bin/x", "exe_source": "proc",
        "cmdline": "x", "proc_error": None, "window_s": 1.0, "connects": 0, "new_flows": 1}


def _ts(t: float) -> str:
    whole = int(t)
    return f"2026-12-01T10:{whole // 60:02d}:{whole % 60:02d}.{int((t - whole) * 1e6):06d}Z"


def expand(spec: dict) -> list[dict]:
    """A case's compact event specs -> full udp events, in time order."""
    times = spec.get("at") or [i * spec.get("every", 1.0) + (spec.get("jitter") or [0] * 99)[i]
                               for i in range(spec.get("repeat", 1))]
    out = []
    for i, t in enumerate(times):
        flows = []
        for f in spec["flows"]:
            if "dport_range" in f:
                lo, hi = f["dport_range"]
                step = spec.get("port_step", 0) * i
                flows += [{"daddr": f["daddr"], "dport": p + step} for p in range(lo, hi + 1)]
            elif "daddr_range" in f:
                prefix, lo, hi = f["daddr_range"]
                flows += [{"daddr": f"{prefix}{n}", "dport": f["dport"]} for n in range(lo, hi + 1)]
            else:
                flows.append({"daddr": f["daddr"], "dport": f["dport"]})
            for fl in flows[-1:] if "daddr" in f and "dport_range" not in f else flows:
                fl.setdefault("datagrams", f["datagrams"])
        for fl in flows:
            fl["family"] = "ipv4"
        ports: dict = {}
        for fl in flows:
            ports.setdefault(fl["daddr"], set()).add(fl["dport"])
        busiest = max(ports, key=lambda a: len(ports[a]))
        ev = {**BASE, **{k: v for k, v in spec.items() if k in BASE}, "v": 1, "type": "udp", "ts": _ts(t),
              "datagrams": sum(fl["datagrams"] for fl in flows), "flow_count": len(flows),
              "hosts": len(ports), "busiest_host": busiest, "busiest_host_ports": len(ports[busiest]),
              "flows": flows}
        ev["pid"] = BASE["pid"] + i * spec.get("pid_step", 0)
        out.append(ev)
    return out


def cases():
    for path in sorted(SAMPLES.glob("*.json")):
        data = json.loads(path.read_text())
        for case in data["cases"]:
            yield pytest.param(data["rule"], case, id=f"{data['rule']}: {case['name']}")


@pytest.mark.parametrize("rule,case", list(cases()))
def test_udp_samples(rule, case):
    judge = UdpJudge()
    outcomes = []
    for spec in case["events"]:
        for ev in expand(spec):
            VALIDATOR.validate(ev)
            out = judge.judge(ev, CFG)
            if out is not None:
                outcomes.append(out)
    fired = [o for o in outcomes if rule in o.verdict.rule_ids]
    assert bool(fired) == case["fires"], [o.verdict.reason for o in outcomes]
    if case["fires"]:
        v = fired[-1].verdict
        assert (v.level, v.category) == (case["level"], case["category"]), v.reason
        assert fired[-1].settled and fired[-1].dedupe_key.startswith(f"proc|udp_{case['category']}|")
        assert "pid" in v.reason
    else:
        assert not outcomes, [o.verdict.reason for o in outcomes]


def test_every_udp_rule_has_samples_both_ways():
    seen: dict = {}
    for path in SAMPLES.glob("*.json"):
        data = json.loads(path.read_text())
        seen[data["rule"]] = {c["fires"] for c in data["cases"]}
    assert seen == {r: {True, False} for r in ("udp-dns-volume", "udp-fanout", "udp-beacon")}


@pytest.mark.parametrize("bad,why", [
    ({"pid": "1"}, "pid must be"),
    ({"flows": "many"}, "flows must be a list"),
    ({"flows": [{"daddr": "10.0.0.1", "dport": 70000, "datagrams": 1}]}, "dport (0-65535)"),
    ({"flows": [{"daddr": 5, "dport": 53, "datagrams": 1}]}, "needs a daddr"),
    ({"flows": [{"daddr": "10.0.0.1", "dport": 53, "datagrams": -1}]}, "datagrams"),
    ({"comm": ["x"]}, "comm must be"),
    ({"busiest_host": None}, "busiest_host"),
    ({"datagrams": True}, "datagrams must be"),
])
def test_hostile_udp_events_are_refused_with_a_reason(bad, why):
    ev = expand({"flows": [{"daddr": "10.0.0.1", "dport": 53, "datagrams": 1}]})[0]
    ev.update(bad)
    with pytest.raises(BadLine, match=re.escape(why)):
        UdpJudge().judge(ev, CFG)


def test_a_broken_rules_file_is_one_line_naming_it(tmp_path):
    bad = tmp_path / "udp.json"
    bad.write_text('{"dns": {}}')
    with pytest.raises(UdpRulesError) as e:
        load_udp_rules(bad)
    assert str(bad) in str(e.value) and "\n" not in str(e.value)
    good = json.loads((Path(__file__).parents[1] / "rules" / "udp.json").read_text())
    good["beacon"]["min_sightings"] = 1
    bad.write_text(json.dumps(good))
    with pytest.raises(UdpRulesError, match="min_sightings"):
        load_udp_rules(bad)


def test_the_real_analyzer_merges_per_process_skips_hostile_lines_and_targets_beacons(tmp_path):
    """llm_analyzer.py --backend rules over a stream of udp events: the DNS
    tunnel's windows are one threat (count), a hostile line is skipped with
    one line on stderr and the stream goes on, a beacon's destination is its
    target, a browser's QUIC is nothing."""
    tunnel = expand({"repeat": 5, "every": 1.0, "comm": "python3", "exe": "/usr/bin/python3.11",
                     "flows": [{"daddr": "10.0.0.53", "dport": 53, "datagrams": 100}]})
    beacon = expand({"repeat": 7, "every": 3.0, "comm": "kworkerd", "exe": "/tmp/.k/kworkerd", "pid_step": 0,
                     "flows": [{"daddr": "198.51.100.7", "dport": 8443, "datagrams": 1}]})
    quic = expand({"repeat": 7, "every": 3.0, "comm": "chromium", "exe": "/usr/lib/chromium/chromium",
                   "flows": [{"daddr": "192.0.2.80", "dport": 443, "datagrams": 3}]})
    for ev in beacon:
        ev["pid"] = 5151
    hostile = dict(tunnel[0], flows=[{"daddr": "10.0.0.53", "dport": 99999, "datagrams": 1}])
    events = sorted(tunnel + beacon + quic, key=lambda e: e["ts"])
    events.insert(2, hostile)
    events.insert(3, "{not json")
    r = run_analyzer(tmp_path, ["--backend", "rules"], lines(events))
    assert r.returncode == 0, r.stderr
    assert "udp event: each flow needs a daddr, a dport (0-65535) and datagrams" in r.stderr
    threats = {t["category"]: t for t in pending(tmp_path / "records")}
    assert set(threats) == {"dns_tunnel", "udp_beacon"}, threats
    dns, c2 = threats["dns_tunnel"], threats["udp_beacon"]
    assert (dns["level"], dns["count"], dns["target"]) == ("HIGH", 3, None)   # windows 3, 4 and 5
    # One attack, one threat: the newest of equal sightings is shown, each kept whole.
    assert "sent 500 port-53 datagrams" in dns["reason"]
    assert any("sent 300 port-53 datagrams" in s["reason"] for s in dns["sightings"])
    assert (c2["level"], c2["target"]) == ("HIGH", "198.51.100.7")
    assert "kworkerd (/tmp/.k/kworkerd, pid 5151" in c2["reason"]
    status = read(tmp_path / "records", "analyzer_status.json")
    assert status["input"]["other_events"]["udp"] == len(tunnel + beacon + quic) + 1
