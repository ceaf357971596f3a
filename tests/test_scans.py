"""Scans and sweeps that cannot be split, and one attack as one threat
(issue 12): events replayed with their own timestamps through the rule
engine (fast), and through the real llm_analyzer.py process into
records/pending_threats.json. The same cases with real tools through the
real loader are in test_kernel_scans.py."""

from __future__ import annotations

import ipaddress

from analyzer_support import conn, lines, pending, read, run_analyzer
from netsentinel.analyzer.rules import DEFAULT_RULES_PATH, RuleEngine
from netsentinel.analyzer.scan import Baselines, DistinctWindow
from netsentinel.llm.config import validate_llm_config

SHELL = {"ppid": 700, "sid": 700, "parent_comm": "bash", "session_leader": "bash"}


def judge(events, config=None):
    engine = RuleEngine(DEFAULT_RULES_PATH)
    cfg = validate_llm_config(config or {})
    return engine, [engine.evaluate(ev, cfg) for ev in events]


def levels(outs):
    return [o.verdict.level for o in outs]


def poller(rounds, exe="/usr/local/bin/poller", every=15.0):
    """A poller of 16 local exporters (9100-9115), one round every `every` s."""
    return [conn(r * every + i * 0.05, pid=900, comm="poller", exe=exe, daddr="127.0.0.1",
                 dport=9100 + i, **SHELL) for r in range(rounds) for i in range(16)]


def test_a_configured_monitoring_agent_polling_16_exporters_is_no_scan():
    _, outs = judge(poller(40), {"scan_allowed_exes": ["/usr/local/bin/poller"]})
    assert set(levels(outs)) == {"INFO"}


def test_a_poller_is_learned_after_its_first_round_and_only_new_ports_count():
    """Its first round looks exactly like a scan (16 ports in a second); from
    its second round on every destination is in its baseline: 40 rounds
    (10 minutes, 640 connections) cross nothing more, while the same
    executable touching 15 new ports is a scan again."""
    engine, outs = judge(poller(40))
    crit = [i for i, lv in enumerate(levels(outs)) if lv == "CRITICAL"]
    assert crit and max(crit) < 16, crit               # the first round only
    assert engine.baselines.learned == 16
    cfg = validate_llm_config({})
    new = [engine.evaluate(conn(700 + i, pid=901, comm="poller", exe="/usr/local/bin/poller",
                                daddr="127.0.0.1", dport=20000 + i, **SHELL), cfg) for i in range(15)]
    assert new[-1].verdict.category == "port_scan"


def test_a_quick_retry_teaches_no_baseline():
    """A scanner's retransmissions (within the 5 s gap) are not a poll."""
    b = Baselines()
    assert not b.known(("u", "x"), ("h", 1), 0.0)
    assert not b.known(("u", "x"), ("h", 1), 1.0)
    assert b.known(("u", "x"), ("h", 1), 6.0) and b.learned == 1


def test_a_shell_loop_sweep_on_port_80_names_the_session_leader():
    """for h in ...; do nc -z -w1 $h 80; done: a new nc per host, on a web port."""
    evs = [conn(i, pid=5000 + i, comm="nc", exe="/usr/bin/nc.openbsd", dport=80,
                cmdline=f"nc -z -w1 10.9.0.{i + 1} 80", daddr=f"10.9.0.{i + 1}", **SHELL)
           for i in range(20)]
    _, outs = judge(evs)
    assert "CRITICAL" not in levels(outs)[:19]   # nc alone is MEDIUM (dual-use-tool)
    v = outs[-1].verdict
    assert v.level == "CRITICAL" and v.category == "host_sweep", v
    assert "parent bash pid 700" in v.reason and "20 distinct hosts" in v.reason
    assert outs[-1].target == "10.9.0.0/24"


def test_a_loop_whose_probes_exited_before_proc_was_read_is_still_one_actor():
    """nc -z to hosts that answer at once: each nc is gone before the loader
    reads /proc (no ppid, sid or exe); the kernel's uid and comm still group them."""
    evs = [conn(i, pid=5100 + i, comm="nc", exe=None, ppid=None, cmdline=None, dport=80,
                proc_error="process exited before it could be read", daddr=f"10.9.4.{i + 1}")
           for i in range(20)]
    _, outs = judge(evs)
    v = outs[-1].verdict
    assert v.category == "host_sweep" and "nc processes of uid 1000" in v.reason, v


def test_a_loop_mixing_tools_is_one_session():
    """nc, curl and bash's /dev/tcp alternate: no one executable crosses the
    threshold, the session does, and the reason names its leader."""
    tools = [("nc", "/usr/bin/nc.openbsd"), ("curl", "/usr/bin/curl"), ("bash", "/usr/bin/bash")]
    evs = [conn(i, pid=6000 + i, ppid=6000 + i - 1, comm=tools[i % 3][0], exe=tools[i % 3][1],
                dport=22, daddr=f"10.9.1.{i + 1}", sid=650, parent_comm="sh", session_leader="sshd")
           for i in range(20)]
    _, outs = judge(evs)
    v = outs[-1].verdict
    assert v.category == "host_sweep" and "session 650 of uid 1000 (pid 6019 /usr/bin/curl, parent sh" in v.reason, v
    assert "session 650 led by sshd" in v.reason


def test_a_slow_connect_scan_crosses_the_long_window_only():
    """One port every 20 s (nmap -sT --scan-delay 20s), replayed: never 15 in
    a minute, 100 within the hour after 33 minutes."""
    evs = [conn(i * 20, pid=7000, comm="probe", exe="/opt/tools/probe", daddr="10.9.2.5",
                dport=1 + i) for i in range(120)]
    _, outs = judge(evs)
    first = ["port-scan" in o.verdict.rule_ids for o in outs].index(True)
    assert first == 99, first
    v = outs[first].verdict
    assert v.category == "port_scan" and "within 3600s (threshold 100" in v.reason, v


def test_a_test_scale_long_window_from_the_settings():
    evs = [conn(i * 20, pid=7001, comm="probe", exe="/opt/tools/probe", daddr="10.9.2.6",
                dport=1 + i) for i in range(12)]
    _, outs = judge(evs, {"scan_long_window_seconds": 300, "scan_long_port_threshold": 12})
    assert levels(outs)[-1] == "CRITICAL" and levels(outs)[-2] != "CRITICAL"


def test_windows_and_baselines_stay_bounded_and_count_what_they_forget():
    w = DistinctWindow(max_groups=4, max_values=8)
    for g in range(10):
        for v in range(20):
            w.observe(("g", g), float(v), None, v, 3600)
    assert len(w) == 4 and w.evicted == 6 and w.values_evicted == 10 * 12
    assert w.observe(("g", 9), 21.0, None, 99, 3600) == 8
    b = Baselines(max_identities=3, max_destinations=5)
    for i in range(6):
        for d in range(9):
            b.known(("u", i), ("h", d), 0.0)
    assert len(b) == 3 and b.evicted == 3
    engine = RuleEngine(DEFAULT_RULES_PATH)
    mem = engine.memory()
    assert {"scan_values_evicted", "baseline_learned", "baseline_evicted"} <= set(mem)


# ------------------------------------------------ through the analyzer process
def test_a_445_sweep_of_20_hosts_is_one_pending_threat_listing_the_hosts(tmp_path):
    hosts = [str(ipaddress.ip_address("10.9.3.1") + i) for i in range(20)]
    evs = [conn(i, pid=8000, comm="nc", exe="/usr/bin/nc.openbsd", dport=445, daddr=h, **SHELL)
           for i, h in enumerate(hosts)]
    r = run_analyzer(tmp_path, ["--backend", "rules"], lines(evs))
    assert r.returncode == 0, r.stderr
    (t,) = pending(tmp_path / "records")
    assert t["count"] == 20 and t["level"] == "CRITICAL" and t["category"] == "host_sweep"
    assert sorted(t["targets_sample"], key=ipaddress.ip_address) == hosts
    assert t["target"] == "10.9.3.0/24" and t["event"]["daddr"] == hosts[-1]
    assert {s["daddr"] for s in t["sightings"]} == set(hosts[-10:])


def test_a_browser_and_curl_opening_many_connections_to_a_few_hosts_are_no_threat(tmp_path):
    evs = [conn(i * 0.1, pid=100 + i % 7, comm="firefox", exe="/usr/lib/firefox/firefox",
                dport=443, daddr=f"93.184.216.{i % 40}") for i in range(400)]
    evs += [conn(50 + i * 0.1, pid=300 + i, comm="curl", exe="/usr/bin/curl", dport=[80, 443][i % 2],
                 daddr=f"151.101.{i % 3}.1") for i in range(60)]
    evs += [conn(60 + i * 0.1, pid=400 + i, comm="dashboard", exe="/usr/bin/python3.11",
                 dport=8501, daddr="127.0.0.1") for i in range(30)]
    r = run_analyzer(tmp_path, ["--backend", "rules"], lines(evs))
    assert r.returncode == 0, r.stderr
    assert pending(tmp_path / "records") == []


def test_each_threat_shows_one_sightings_evidence(tmp_path):
    """A loopback scan by a probe, then a deleted binary connecting to the same
    host, then a browser opening the dashboard there: the deleted binary
    is its own threat under its own reason and process; the browser is no
    scan; within the scan's threat reason and event are one sighting's."""
    scan = [conn(i, pid=4000, comm="probe", exe="/opt/tools/probe", daddr="127.0.0.1",
                 dport=1000 + i) for i in range(30)]
    deleted = conn(31, pid=4100, comm="x", exe="/tmp/x (deleted)", daddr="127.0.0.1", dport=8501)
    browser = [conn(32 + i * 0.1, pid=4200, comm="firefox", exe="/usr/bin/firefox-esr",
                    daddr="127.0.0.1", dport=8501) for i in range(20)]
    late_hint = conn(200, pid=4000, comm="probe", exe="/opt/tools/probe", daddr="127.0.0.1", dport=23)
    r = run_analyzer(tmp_path, ["--backend", "rules"], lines(scan + [deleted] + browser + [late_hint]))
    assert r.returncode == 0, r.stderr
    by_exe = {t["event"]["exe"]: t for t in pending(tmp_path / "records")}
    assert set(by_exe) == {"/opt/tools/probe", "/tmp/x (deleted)"}, by_exe
    gone = by_exe["/tmp/x (deleted)"]
    assert "deleted" in gone["reason"] and gone["count"] == 1 and gone["category"] != "port_scan"
    nmap = by_exe["/opt/tools/probe"]
    assert nmap["category"] == "port_scan" and nmap["count"] == 30 - 14 + 1
    # The later HIGH telnet sighting did not overwrite the scan's evidence.
    assert nmap["event"]["dport"] == 1029 and "30 distinct ports" in nmap["reason"]
    assert nmap["sightings"][-1]["dport"] == 23 and nmap["sightings"][-1]["level"] == "HIGH"
    assert all(s["exe"] == "/opt/tools/probe" for s in nmap["sightings"])
    logs = read(tmp_path / "records", "dashboard_logs.json")["entries"]
    assert {e["level"] for e in logs if e["event"]["comm"] == "firefox"} == {"INFO"}


def test_hostile_session_fields_are_refused_with_a_reason(tmp_path):
    bad = [conn(0, sid="700"), conn(1, sid=[1]), conn(2, parent_comm=5)]
    r = run_analyzer(tmp_path, ["--backend", "rules"], lines(bad + [conn(3)]))
    assert r.returncode == 0, r.stderr
    kept = (tmp_path / "records" / "analyzer_rejected.jsonl").read_text()
    assert kept.count("must be int or null") == 2 and "parent_comm must be str" in kept
