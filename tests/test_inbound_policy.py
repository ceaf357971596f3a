"""The per-source inbound view and the auto-ban policy (issue 13), without
root: real lab windows (ml/data/flows.jsonl) and `accepts`/`tcp_health`/
`connection` events shaped as the loader writes them (docs/events.md),
through the real llm_analyzer.py process where the records matter."""

from __future__ import annotations

import json

from netsentinel.filterrules import parse_rule

from analyzer_support import conn, run_analyzer
from netsentinel.analyzer.autoban import AutoBanPolicy, ntp_servers, upstreams
from netsentinel.analyzer.floods import FloodDetector, half_open
from netsentinel.analyzer.inbound import BRUTE_HIGH, InboundView
from netsentinel.records import BAN_COMMANDS, PENDING_THREATS
from test_analyzer_floods import feed, windows
from test_floods import ROWS

TS = "2026-11-21T23:01:51.227421Z"


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def accepts(src: str, port: int, count: int) -> dict:
    return {"v": 1, "type": "accepts", "ts": TS, "interval_s": 2.0, "total": count,
            "sources": [{"src": src, "port": port, "count": count}], "sources_more": 0, "other_netns": 0}


def tcp_health(remote: str, state: str = "ESTABLISHED", final: bool = False, direction="inbound") -> dict:
    return {"v": 1, "type": "tcp_health", "ts": TS, "final": final, "family": "ipv4", "saddr": "10.9.0.1",
            "sport": 5201, "daddr": remote, "dport": 40000, "state": state, "direction": direction}


def open_port_syn_flood(src: str, syns: int = 2000) -> dict:
    """A one-second window of hping3 -S against an open port: each SYN-ACK
    answered by the attacker's kernel with a RST (no SYN, no ACK)."""
    ev = dict(next(r["event"] for r in ROWS if r["label"] == "syn_flood"))
    ev.update(src=src, window_s=1.0, packets=2 * syns, tcp=2 * syns, tcp_syn=syns, tcp_ack=0,
              bytes=2 * syns * 54, pps=2.0 * syns, dport_buckets=1)
    return ev


def test_open_port_syn_flood_is_critical_despite_the_rsts():
    ev = open_port_syn_flood("10.9.0.7")
    assert half_open(ev, 0) == (2000, 2000)
    v = FloodDetector().judge(ev)
    assert (v.level, v.category) == ("CRITICAL", "syn_flood")
    # The same SYNs, each one a completed handshake (accepts), are no flood.
    assert FloodDetector().judge(ev, accept_rate=2000.0) is None


def test_brute_force_is_high_from_one_a_second_per_port():
    clock = Clock()
    view = InboundView(clock)
    said = []
    for _ in range(30):                       # 2/s for 60 s, reported every 2 s
        said += view.on_accepts(accepts("10.9.0.5", 22, 4))
        clock.t += 2.0
    assert [(b.src, b.port, b.level) for b in said] == [("10.9.0.5", 22, "HIGH")]
    assert said[0].count == BRUTE_HIGH
    assert "on port 22" in said[0].reason
    # Other ports and sources are counted apart.
    assert view.on_accepts(accepts("10.9.0.5", 80, 4)) == []


def test_hostile_accepts_rows_are_skipped():
    view = InboundView(Clock())
    bad = accepts("10.9.0.5", 22, 1)
    bad["sources"] = ["x", {"src": 5, "port": 22, "count": 1}, {"src": "a", "port": True, "count": 1},
                      {"src": "a", "port": 70000, "count": 1}, {"src": "a", "port": 22, "count": -3}]
    assert view.on_accepts(bad) == [] and view.on_accepts(dict(bad, sources="str")) == []
    assert view.proven("a") is None


def test_the_policy_bans_only_proven_sources_never_ours():
    clock = Clock()
    view = InboundView(clock)
    policy = AutoBanPolicy(view, lambda: {"host": "http://10.9.0.40:11434"}, clock, ntp=lambda: ["10.9.0.50"])
    flood = {"category": "icmp_flood"}
    assert "spoofable evidence only" in policy.refusal(dict(flood, target="10.9.0.7"))
    view.on_accepts(accepts("10.9.0.7", 80, 1))
    assert policy.refusal(dict(flood, target="10.9.0.7")) is None
    clock.t += 61                                  # the proof is a minute's
    assert "spoofable" in policy.refusal(dict(flood, target="10.9.0.7"))
    view.on_connection(conn(daddr="10.9.0.8", dport=443))   # a server this host uses
    view.on_accepts(accepts("10.9.0.8", 80, 1))
    assert "this host connected to it (port 443)" in policy.refusal(dict(flood, target="10.9.0.8"))
    assert "an NTP server" in policy.refusal(dict(flood, target="10.9.0.50"))
    assert "configured upstream" in policy.refusal(dict(flood, target="10.9.0.40"))
    view.on_tcp_health(tcp_health("10.9.0.9"))
    view.on_accepts(accepts("10.9.0.9", 5201, 1))
    assert "established inbound TCP session" in policy.refusal(dict(flood, target="10.9.0.9"))
    # Handshake evidence bans on its own; the sessions are that evidence.
    assert policy.refusal({"category": "brute_force", "target": "10.9.0.9"}) is None
    view.on_tcp_health(tcp_health("10.9.0.9", "CLOSE", final=True))
    assert "spoofable" not in (policy.refusal(dict(flood, target="10.9.0.9")) or "")


def test_ntp_servers_and_upstreams_by_address(tmp_path):
    (tmp_path / "chrony.conf").write_text("pool 2.debian.pool.ntp.org iburst\nserver 192.0.2.123 iburst\n"
                                          "# server 192.0.2.9\n")
    (tmp_path / "timesyncd.conf").write_text("[Time]\nNTP=192.0.2.124 time.example\nFallbackNTP=2001:db8::7\n")
    assert ntp_servers([str(tmp_path / "*.conf")]) == ["192.0.2.123", "192.0.2.124", "2001:db8::7"]
    assert upstreams({"host": "http://[2001:db8::1]:11434/v1"}) == ["2001:db8::1"]
    assert upstreams({"host": "https://api.example/v1"}) == [] and upstreams({"host": None}) == []


def test_unproven_critical_flood_is_withheld_proven_one_blocked(tmp_path):
    flood = windows("icmp_flood", "u100")[:2]
    proven = [dict(w, src="10.9.0.77") for w in flood]
    events = [accepts("10.9.0.77", 443, 1)] + flood + proven
    r = run_analyzer(tmp_path, ["--backend", "rules"], feed(events))
    assert r.returncode == 0, r.stderr
    rec = tmp_path / "records"
    by_target = {t["target"]: t for t in json.loads((rec / PENDING_THREATS).read_text())}
    spoofable = by_target[flood[0]["src"]]
    assert (spoofable["level"], spoofable["status"]) == ("CRITICAL", "pending")
    assert "spoofable evidence only" in spoofable["reason"]
    assert f"auto-block of {flood[0]['src']} withheld: spoofable evidence only" in r.stderr
    assert by_target["10.9.0.77"]["status"] == "approved"
    cmds = json.loads((rec / BAN_COMMANDS).read_text())
    assert [c["ip"] for c in cmds] == ["10.9.0.77"]
    # Not banned, but rate-limited: a ratelimit rule on that source alone.
    (limit,) = [c for c in json.loads((rec / "rule_commands.json").read_text())
                if c["rule"].get("src") == flood[0]["src"]]
    assert limit["action"] == "add_rule" and limit["source"] == "auto-flood"
    assert {k: limit["rule"][k] for k in ("id", "action", "proto", "rate_pps", "ttl_seconds")} == {
        "id": f"src-icmp-{flood[0]['src']}", "action": "ratelimit", "proto": "icmp", "rate_pps": 100,
        "ttl_seconds": 600}
    assert parse_rule(limit["rule"]).src is not None  # the loader's own validation accepts it


def test_udp_stream_of_an_established_session_is_not_a_flood(tmp_path):
    udp = [w for w in windows("udp_flood") if w["udp"] / w["window_s"] >= 3000][:2]
    assert udp
    session = [dict(w, src="10.9.0.88") for w in udp]
    events = [tcp_health("10.9.0.88"), accepts("10.9.0.88", 5201, 1)] + session + udp
    r = run_analyzer(tmp_path, ["--backend", "rules"], feed(events))
    assert r.returncode == 0, r.stderr
    threats = json.loads((tmp_path / "records" / PENDING_THREATS).read_text())
    assert [t["target"] for t in threats] == [udp[0]["src"]]      # the session's stream is no threat
    assert threats[0]["level"] == "CRITICAL" and threats[0]["category"] == "udp_flood"
    logs = json.loads((tmp_path / "records" / "dashboard_logs.json").read_text())["entries"]
    mine = [e for e in logs if e["event"].get("src") == "10.9.0.88"]
    assert mine and all(e["level"] == "MEDIUM" and e["category"] == "udp_session_stream" for e in mine)
    assert "established inbound TCP session" in mine[0]["reason"]


def test_brute_force_through_the_analyzer_is_a_high_threat(tmp_path):
    events = [accepts("10.9.0.66", 22, 4) for _ in range(30)]
    r = run_analyzer(tmp_path, ["--backend", "rules"], feed(events))
    assert r.returncode == 0, r.stderr
    [t] = json.loads((tmp_path / "records" / PENDING_THREATS).read_text())
    assert (t["category"], t["level"], t["target"], t["status"]) == ("brute_force", "HIGH", "10.9.0.66", "pending")
    assert "on port 22" in t["reason"] and t["event"]["count"] >= BRUTE_HIGH


def test_a_udp_stream_opening_with_its_tcp_session_is_held_until_the_session_is_known(tmp_path):
    udp = [w for w in windows("udp_flood") if w["udp"] / w["window_s"] >= 3000][:4]
    first = dict(udp[0], src="10.9.0.89", tcp=6, tcp_ack=5, packets=udp[0]["packets"] + 6)
    # iperf3: the control connection's ACKs in the first window, the session
    # reported after the second; a flood faking ACKs is held as long, no more.
    events = ([first, dict(udp[1], src="10.9.0.89"), tcp_health("10.9.0.89"), dict(udp[2], src="10.9.0.89")]
              + [dict(first, src="10.9.0.90")] + [dict(w, src="10.9.0.90") for w in udp[1:4]])
    r = run_analyzer(tmp_path, ["--backend", "rules"], feed(events))
    assert r.returncode == 0, r.stderr
    threats = json.loads((tmp_path / "records" / PENDING_THREATS).read_text())
    assert [(t["target"], t["level"]) for t in threats] == [("10.9.0.90", "CRITICAL")]
    logs = json.loads((tmp_path / "records" / "dashboard_logs.json").read_text())["entries"]
    stream = [(e["level"], e["category"]) for e in logs if e["event"].get("src") == "10.9.0.89"]
    assert stream == [("MEDIUM", "udp_flood"), ("MEDIUM", "udp_flood"), ("MEDIUM", "udp_session_stream")]
