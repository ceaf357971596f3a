"""The real llm_analyzer.py judging outbound behaviour (issue 12): raw_socket
events and connections carrying the loader's signals."""

from __future__ import annotations

from analyzer_support import conn, lines, pending, read, run_analyzer, ts


def raw(at: float = 0.0, **fields) -> dict:
    ev = {"v": 1, "type": "raw_socket", "ts": ts(at), "pid": 7000, "tid": 7000, "ppid": 1, "uid": 0,
          "comm": "nmap", "exe": "/usr/bin/nmap", "exe_source": "proc", "exec_path": "/usr/bin/nmap",
          "cmdline": "nmap -sS 10.0.0.5", "proc_error": None, "family": "ipv4", "sock_type": "raw",
          "protocol": 255, "protocol_name": "raw", "fd": 3}
    ev.update(fields)
    return ev


def test_raw_sockets_are_one_threat_per_process_and_allowed_tools_are_quiet(tmp_path):
    events = [
        raw(0), raw(0.1, family="packet", protocol=0, protocol_name="none (send only)", fd=5),
        raw(1, pid=7001, tid=7001, comm="ping", exe="/usr/bin/ping", protocol=1, protocol_name="icmp"),
        raw(2, pid=7002, tid=7002, comm="python3", exe="/usr/bin/python3.11", cmdline="python3 syn.py"),
        dict(raw(3), pid="7003"),
    ]
    r = run_analyzer(tmp_path, ["--backend", "rules"], lines(events))
    assert r.returncode == 0, r.stderr
    assert "raw_socket event: pid must be int" in r.stderr
    threats = {t["event"]["comm"]: t for t in pending(tmp_path / "records")}
    assert set(threats) == {"nmap", "python3"}, threats
    nmap, py = threats["nmap"], threats["python3"]
    assert (nmap["level"], nmap["category"], nmap["count"]) == ("CRITICAL", "raw_scan", 2)
    assert "scanner nmap (/usr/bin/nmap, pid 7000) opened a raw socket" in nmap["reason"]
    assert nmap["rule_ids"] == ["raw-socket-scanner", "raw-socket"]
    assert (py["level"], py["category"]) == ("HIGH", "raw_socket")
    assert py["target"] is None   # nothing to ban: the actor is the local process
    entries = read(tmp_path / "records", "dashboard_logs.json")["entries"]
    ping = [e for e in entries if e["event"]["comm"] == "ping"]
    assert ping and ping[0]["level"] == "INFO" and ping[0]["verdict_source"] == "rules"
    status = read(tmp_path / "records", "analyzer_status.json")
    assert status["input"]["invalid_lines"] == 1
    assert status["input"]["other_events"]["raw_socket"] == 5


def test_a_shell_on_a_socket_is_critical_on_any_port_and_curl_is_not(tmp_path):
    shell = dict(comm="bash", exe="/usr/bin/bash", cmdline="bash -i", uid=33, pid=8000, tid=8000)
    events = [
        conn(0, dport=443, signals={"stdio_socket": "fd 0,1 -> tcp 10.0.0.5:443 (ESTABLISHED)"}, **shell),
        conn(1, daddr="10.0.0.6", dport=53,
             signals={"stdio_socket": "fd 0,1 -> tcp 10.0.0.6:53 (ESTABLISHED)"}, **shell),
        conn(2, daddr="10.0.0.7", dport=443, comm="curl", exe="/usr/bin/curl", pid=8001, tid=8001),
    ]
    r = run_analyzer(tmp_path, ["--backend", "rules"], lines(events))
    assert r.returncode == 0, r.stderr
    # One actor (bash of uid 33), one threat listing both destinations; what
    # it shows is one sighting's, whole (the newest of the two CRITICALs).
    (t,) = pending(tmp_path / "records")
    assert (t["target"], t["level"], t["category"]) == ("10.0.0.6", "CRITICAL", "reverse_shell")
    assert t["targets_sample"] == ["10.0.0.5", "10.0.0.6"] and t["count"] == 2
    assert "reverse shell: bash (/usr/bin/bash, pid 8000)" in t["reason"]
    assert "stdio_socket: fd 0,1 -> tcp 10.0.0.6:53" in t["reason"] and t["event"]["dport"] == 53
    first = t["sightings"][0]
    assert "stdio_socket: fd 0,1 -> tcp 10.0.0.5:443" in first["reason"] and first["dport"] == 443
    assert "common-service" in t["rule_ids"]   # matched, but no longer hides it


def egress(at: float, ports, daddr="10.0.0.5", **fields) -> dict:
    ev = {"v": 1, "type": "egress", "ts": ts(at), "pid": 7002, "ppid": 1, "uid": 0, "comm": "python3",
          "exe": "/usr/bin/python3.11", "cmdline": "python3 syn.py", "attribution": "cookie",
          "cookie": 4106, "window_s": 1.0, "packets": len(ports), "syns": len(ports), "icmp": 0,
          "hosts": 1, "targets": [{"daddr": daddr, "family": "ipv4", "packets": len(ports),
                                   "syns": len(ports), "icmp": 0, "tcp_port_count": len(ports),
                                   "udp_port_count": 0, "tcp_ports": list(ports), "udp_ports": []}]}
    ev.update(fields)
    return ev


def test_raw_fan_out_raises_the_process_threat_to_a_critical_port_scan(tmp_path):
    """A renamed SYN scanner: its raw socket alone is HIGH; the egress windows
    (10 ports, then 10 more: 20 distinct within the 60 s window) make the same
    threat a CRITICAL port scan naming it."""
    events = [raw(0, pid=7002, tid=7002, comm="python3", exe="/usr/bin/python3.11",
                  cmdline="python3 syn.py"),
              egress(1, range(1000, 1010)), egress(2, range(1010, 1020)),
              # ping's echo requests: one host, no ports: not even recorded
              egress(3, [], pid=7001, comm="ping", exe="/usr/bin/ping", cookie=9, packets=1, syns=0,
                     icmp=1, targets=[{"daddr": "10.0.0.9", "family": "ipv4", "packets": 1, "syns": 0,
                                       "icmp": 1, "tcp_port_count": 0, "udp_port_count": 0,
                                       "tcp_ports": [], "udp_ports": []}]),
              # nobody known opened this socket
              egress(4, range(1, 40), daddr="10.0.0.7", attribution=None, cookie=77,
                     **dict.fromkeys(("pid", "ppid", "uid", "comm", "exe", "cmdline"))),
              dict(egress(5, [1]), targets="all of them")]
    r = run_analyzer(tmp_path, ["--backend", "rules"], lines(events))
    assert r.returncode == 0, r.stderr
    assert "egress event: targets must be a list" in r.stderr
    threats = pending(tmp_path / "records")
    assert len(threats) == 2, threats
    py, anon = sorted(threats, key=lambda t: t["event"]["type"] == "egress" and t["event"]["cookie"] == 77)
    assert (py["level"], py["category"], py["count"]) == ("CRITICAL", "port_scan", 2)
    assert py["reason"].startswith("raw port scan: python3 (/usr/bin/python3.11, pid 7002) sent to 20 "
                                   "distinct ports on 10.0.0.5 within 60s without connect()")
    assert (anon["level"], anon["category"]) == ("CRITICAL", "port_scan")
    assert "an unidentified process (socket cookie 77)" in anon["reason"]
    entries = read(tmp_path / "records", "dashboard_logs.json")["entries"]
    assert [e["level"] for e in entries] == ["HIGH", "CRITICAL", "CRITICAL"]
    status = read(tmp_path / "records", "analyzer_status.json")
    assert status["input"]["other_events"]["egress"] == 5 and status["input"]["invalid_lines"] == 1
