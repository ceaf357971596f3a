"""The analyzer on `flow` events: real lab windows (ml/data/flows.jsonl)
through the real llm_analyzer.py process. CRITICAL floods are auto-blocked
with a TTL by default (floods only), can be switched to review, normal
traffic is left alone, and with an LLM in force a rule proposal waits."""

import json

from netsentinel.eventstore import Query, open_store
from analyzer_support import analyzer_env, read, run_analyzer, start_analyzer, wait_for
from netsentinel.testing.llm_standins import StandinServer
from netsentinel.records import BAN_COMMANDS, PENDING_THREATS
from test_floods import ROWS


def windows(label, variant=None):
    return [dict(r["event"]) for r in ROWS if r["label"] == label and variant in (None, r["variant"])]


def feed(events) -> str:
    return "".join(json.dumps(e) + "\n" for e in events)


def test_critical_flood_is_auto_blocked_with_a_ttl(tmp_path):
    flood = windows("icmp_flood", "u100")[:3]
    normal = windows("normal")[:20]
    # The source proved its address first: a completed handshake (issue 13;
    # an unproven one is withheld: tests/test_inbound_policy.py).
    proof = {"v": 1, "type": "accepts", "ts": flood[0]["ts"], "interval_s": 2.0, "total": 1,
             "sources": [{"src": flood[0]["src"], "port": 80, "count": 1}], "sources_more": 0,
             "other_netns": 0}
    r = run_analyzer(tmp_path, ["--backend", "rules"], feed([proof] + normal + flood))
    assert r.returncode == 0, r.stderr
    rec = tmp_path / "records"
    threats = read(rec, PENDING_THREATS)
    assert len(threats) == 1, threats
    t = threats[0]
    assert (t["kind"], t["category"], t["level"]) == ("flood", "icmp_flood", "CRITICAL")
    assert t["target"] == flood[0]["src"] and t["count"] == 3
    assert t["status"] == "approved" and t["decided_by"] == "auto-block"
    cmd = read(rec, BAN_COMMANDS)
    assert cmd == [dict(cmd[0], action="ban", ip=flood[0]["src"], source="auto-flood", ttl_seconds=600)]
    assert "auto-block" in r.stderr
    db = open_store(str(rec / "events.sqlite3"), readonly=True)  # the decision, in the history too
    assert [d["reason"][:20] for d in db.search(Query(kind="decision"))] == ["auto-block: approved"]
    db.close()


def test_auto_block_off_leaves_floods_for_review(tmp_path):
    rec = tmp_path / "records"
    rec.mkdir()
    (rec / "llm_config.json").write_text(json.dumps({"auto_block_floods": False,
                                                     "flood_ban_ttl_seconds": 60}))
    r = run_analyzer(tmp_path, ["--backend", "rules"], feed(windows("syn_flood", "u100")[:2]))
    assert r.returncode == 0, r.stderr
    t = read(rec, PENDING_THREATS)[0]
    assert (t["category"], t["level"], t["status"]) == ("syn_flood", "CRITICAL", "pending")
    assert read(rec, BAN_COMMANDS) is None


def test_each_kind_and_normal_traffic(tmp_path):
    kinds = ["ssdp_flood", "reflection", "udp_flood", "port_scan"]
    events = windows("normal") + [w for k in kinds for w in windows(k)]
    r = run_analyzer(tmp_path, ["--backend", "rules"], feed(events))
    assert r.returncode == 0, r.stderr
    threats = read(tmp_path / "records", PENDING_THREATS)
    assert {t["category"] for t in threats} == set(kinds)
    normal_srcs = {e["src"] for e in windows("normal")}
    assert not [t for t in threats if t["target"] in normal_srcs]
    logs = read(tmp_path / "records", "dashboard_logs.json")["entries"]
    assert not [e for e in logs if e["event"]["src"] in normal_srcs and e["level"] != "MEDIUM"]


def test_bad_flood_thresholds_are_refused_and_the_previous_stay(tmp_path):
    rec = tmp_path / "records"
    rec.mkdir()
    (rec / "llm_config.json").write_text(json.dumps({"flood_thresholds": {"icmp_flood": {"critical": -5}}}))
    r = run_analyzer(tmp_path, ["--backend", "rules"], feed(windows("icmp_flood", "u100")[:1]))
    assert r.returncode == 0
    assert "non-negative" in r.stderr
    assert read(rec, PENDING_THREATS)[0]["level"] == "CRITICAL"


def test_flood_with_an_llm_in_force_leaves_a_rule_proposal(tmp_path):
    answer = {"summary": "ICMP echo flood", "rules": [
        {"action": "drop", "src": windows("icmp_flood", "u100")[0]["src"], "proto": "icmp",
         "icmp_type": 8, "reason": "echo flood"}]}
    with StandinServer(lambda req: (200, json.dumps(answer)
                                    if "FLOW_DATA" in json.dumps(req) else '{"level": "INFO"}')) as s:
        env = analyzer_env(tmp_path, OLLAMA_HOST=s.url)
        p = start_analyzer(tmp_path, ["--backend", "ollama", "--model", "standin-model"], env=env)
        p.stdin.write(feed(windows("icmp_flood", "u100")[:2]))
        p.stdin.flush()
        rec = tmp_path / "records"
        props = wait_for(lambda: read(rec, "rule_proposals.json"), 15)
        p.stdin.close()
        assert p.wait(timeout=30) == 0
    assert props and props[0]["status"] == "pending" and props[0]["rules"][0]["valid"]
    assert props[0]["trigger"]["category"] == "icmp_flood"


def test_aggregate_flood_gets_one_rate_limit_rule_and_no_ban(tmp_path):
    """flow_aggregate events through the real analyzer: a CRITICAL one queues
    one ratelimit rule (renewed at half its life, not per window), a HIGH one
    is only logged, and nothing is banned or made a per-address threat."""
    from netsentinel.records import RULE_COMMANDS
    ts = "2026-01-01T00:00:00Z"
    base = {"v": 1, "type": "flow_aggregate", "ts": ts, "kind": "syn", "proto": "tcp", "dport": 8080,
            "window_s": 1.0, "elapsed_s": 0.3}
    events = [dict(base, phase="crossed", packets=8000, pps=8000.0),
              dict(base, phase="window", packets=30000, pps=30000.0, elapsed_s=1.0),
              dict(base, kind="udp", proto="udp", dport=53, phase="window", packets=25000, pps=25000.0),
              dict(base, kind="icmp", proto="icmp", dport=None, phase="window", packets=9000, pps=9000.0),
              dict(base, kind="syn", dport=70000, phase="window", packets=1, pps=1.0)]   # refused input
    r = run_analyzer(tmp_path, ["--backend", "rules"], feed(events))
    assert r.returncode == 0, r.stderr
    rec = tmp_path / "records"
    cmds = read(rec, RULE_COMMANDS)
    # ICMP counts both families: both are capped.
    assert [c["rule"]["id"] for c in cmds] == ["agg-syn-8080", "agg-icmp-all", "agg-icmp-all-v6"]
    assert [c["rule"]["proto"] for c in cmds[1:]] == ["icmp", "icmpv6"]
    rule = cmds[0]["rule"]
    assert (rule["action"], rule["proto"], rule["dport"], rule["source"], rule["ttl_seconds"]) == \
        ("ratelimit", "tcp", 8080, "auto-flood", 600)
    assert read(rec, BAN_COMMANDS) is None and not read(rec, PENDING_THREATS)
    levels = sorted(e["level"] for e in read(rec, "dashboard_logs.json")["entries"])
    assert levels == ["CRITICAL", "CRITICAL", "CRITICAL", "HIGH"]
    assert "dport must be 0-65535" in r.stderr
