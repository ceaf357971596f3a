"""Scans and sweeps with real tools through the real pipeline (issue 12):
`unified_ebpf.py | llm_analyzer.py --backend rules` with the loader in the
lab's dut namespace, the tools run there by a real unprivileged user
(`useradd --system`, `runuser -u`): a bash loop of nc sweeping 20 hosts on
port 80, nmap -sT with --scan-delay against a test-scale long window, a
poller of 16 exporters, curl fetching many pages from two hosts.

Connection events are machine-wide (other suites' connections show up in
these records too): every assertion names what this test started."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import textwrap

import pytest

from netlab import lab, kernel_test_skip_reason, read_json, validate, wait_until  # noqa: F401
from netsentinel.testing.lab import start_pipeline

SKIP = kernel_test_skip_reason()
pytestmark = pytest.mark.skipif(SKIP is not None, reason=str(SKIP))

USER = "nslabscan"
POLLER_DIR = f"/usr/local/lib/netsentinel-lab-{os.getpid()}"   # root-owned, 0755
POLLER = f"{POLLER_DIR}/poller"                                  # a copy of python, allowed by path
SWEEP_HOSTS = range(10, 30)
ANSWERING = range(10, 20)   # these refuse at once; .20-.29 are silent (nc waits its -w1)
EXPORTERS = range(9100, 9116)

# Many listening ports in one process (the exporters, and port 80 on the swept hosts).
LISTEN_MANY = textwrap.dedent("""
    import selectors, socket, sys
    sel = selectors.DefaultSelector()
    for spec in sys.argv[1:]:
        host, port = spec.rsplit(":", 1)
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((host, int(port)))
        s.listen(64)
        sel.register(s, selectors.EVENT_READ)
    print("ready", flush=True)
    while True:
        for key, _ in sel.select():
            c, _ = key.fileobj.accept()
            c.close()
""")

# A poller as pollers are: a round of scrapes, then its interval.
POLL = textwrap.dedent("""
    import socket, sys, time
    host, rounds, interval = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    for r in range(rounds):
        if r:
            time.sleep(interval)
        for port in range(9100, 9116):
            socket.create_connection((host, port), timeout=5).close()
""")


@pytest.fixture(scope="module")
def user():
    made = subprocess.run(["id", USER], capture_output=True).returncode != 0
    if made:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", USER],
                       check=True)
    yield USER
    if made:
        # userdel fails while /etc/passwd is locked by another useradd or
        # while one of the user's processes is still exiting: retry until done.
        wait_until(lambda: subprocess.run(["userdel", USER], capture_output=True).returncode == 0
                   or subprocess.run(["id", USER], capture_output=True).returncode != 0,
                   timeout=30, interval=0.5, what=f"userdel {USER}")


@pytest.fixture(scope="module")
def pipeline(lab, tmp_path_factory):
    """Test scale: the long window is 10 minutes and 12 ports (so a scan at
    one port every 5 s crosses it in a minute, and never the 15 ports/min
    of the short window); the poller's copy of python is an allowed exe."""
    records = tmp_path_factory.mktemp("records")
    cfg = records / "filter_config.json"
    cfg.write_text("{}")
    records.chmod(0o700)
    os.makedirs(POLLER_DIR, mode=0o755)
    shutil.copy2("/usr/bin/python3.11", POLLER)
    peer_net = lab.peer4.rsplit(".", 1)[0]
    for h in ANSWERING:
        lab.ns_exec(lab.peer, "ip", "addr", "add", f"{peer_net}.{h}/24", "dev", lab.peer_if, check=True)
    listener = subprocess.Popen(
        ["ip", "netns", "exec", lab.peer, "/usr/bin/python3", "-c", LISTEN_MANY,
         *[f"{lab.peer4}:{p}" for p in EXPORTERS], *[f"{peer_net}.{h}:80" for h in ANSWERING],
         f"{lab.peer4b}:80"], stdout=subprocess.PIPE, text=True)
    loader = analyzer = None
    try:
        assert listener.stdout.readline().strip() == "ready"
        loader, analyzer = start_pipeline(
            lab, records, cfg, ["--backend", "rules", "--status-interval", "0.3", "--history",
                                "--scan-long-window", "600", "--scan-long-ports", "12",
                                "--scan-allow", POLLER], ["--no-cgroup"])
        wait_until(lambda: (read_json(records / "analyzer_status.json") or {}).get("input", {})
                   .get("other_events", {}).get("startup"), timeout=90, what="the pipeline to start")
        yield records
    finally:
        if loader is not None:
            loader.terminate()
            assert loader.wait(timeout=30) == 0, (records / "loader.log").read_text()[-2000:]
            assert analyzer.wait(timeout=30) == 0, (records / "analyzer.log").read_text()[-2000:]
        listener.kill()
        listener.wait()
        shutil.rmtree(POLLER_DIR)


def judged(records, **match) -> list[dict]:
    """Every verdict on a connection whose event has these field values."""
    try:
        text = (records / "analyzed_events.jsonl").read_text()
    except FileNotFoundError:
        return []
    return [e for e in map(json.loads, text.splitlines()) if e["event"].get("type") == "connection"
            and all(e["event"].get(k) == v for k, v in match.items())]


def pending(records) -> list[dict]:
    return [t for t in read_json(records / "pending_threats.json", []) if t["status"] == "pending"]


def as_user(lab, user, *argv, **kw) -> subprocess.Popen:
    """A tool run by the user in its own session, as from its own login
    (one session is one actor for the scan rules)."""
    return subprocess.Popen(["ip", "netns", "exec", lab.dut, "setsid", "runuser", "-u", user, "--",
                             *argv], **kw)


def test_a_bash_loop_sweep_on_port_80_is_one_threat_naming_the_shell(lab, pipeline, user):
    peer_net = lab.peer4.rsplit(".", 1)[0]
    hosts = [f"{peer_net}.{h}" for h in SWEEP_HOSTS]
    # Half the hosts answer at once (the nc is often gone before the loader
    # reads /proc), half are silent (nc waits a second: ppid, sid, parent).
    loop = as_user(lab, user, "bash", "-c", f"for h in {' '.join(hosts)}; do nc -z -w1 $h 80; done; true")
    assert loop.wait(timeout=120) == 0
    uid = uid_of(user)

    def mine() -> list:
        return [t for t in pending(pipeline) if t["category"] == "host_sweep"
                and t["event"]["uid"] == uid and t["event"]["comm"] == "nc"]
    (t,) = wait_until(mine, timeout=30, what="one pending host_sweep threat for the nc loop")
    ev = validate(dict(t["event"]))
    assert ev["exe"] == "/usr/bin/nc.openbsd" and ev["dport"] == 80 and ev["sid"] is not None
    assert ev["parent_comm"] == "bash" and "parent bash pid" in t["reason"], t["reason"]
    assert f"session {ev['sid']} led by runuser" in t["reason"]
    assert "20 distinct hosts" in t["reason"] and t["target"] == f"{peer_net}.0/24"
    assert sorted(t["targets_sample"]) == sorted(hosts)
    # Every probe was its own process: 20 pids, one parent.
    seen = judged(pipeline, uid=uid, comm="nc", dport=80)
    assert len({e["event"]["pid"] for e in seen}) == 20
    assert {e["event"]["ppid"] for e in seen} - {None} == {ev["ppid"]}


def uid_of(user: str) -> int:
    return int(subprocess.run(["id", "-u", user], capture_output=True, text=True, check=True).stdout)


def test_a_slow_nmap_connect_scan_by_a_user_crosses_the_long_window(lab, pipeline, user):
    """nmap -sT (connect(), as an unprivileged user) at one port every 5 s:
    at most 13 ports in any minute, 12 within the (test-scale) long window."""
    uid = uid_of(user)
    scan = as_user(lab, user, "nmap", "-sT", "-n", "-Pn", "--max-retries", "0", "--scan-delay", "5s",
                   "-p", "2001-2014", lab.peer4b, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        hit = wait_until(lambda: [e for e in judged(pipeline, exe="/usr/bin/nmap", uid=uid)
                                  if "port-scan" in e["rule_ids"]], timeout=150,
                         what="the slow scan crossing the long window")[0]
    finally:
        scan.kill()
        scan.wait()
    assert "within 600s (threshold 12" in hit["reason"] and hit["event"]["comm"] == "nmap"
    seen = judged(pipeline, exe="/usr/bin/nmap", uid=uid)
    before = [e for e in seen if e["event"]["ts"] < hit["event"]["ts"]]
    # 11 distinct ports before it (nmap may connect to a port twice).
    assert len({e["event"]["dport"] for e in before}) == 11
    assert not any("port-scan" in e["rule_ids"] for e in before)
    (t,) = [t for t in pending(pipeline) if t["event"].get("exe") == "/usr/bin/nmap"
            and t["event"]["uid"] == uid]
    assert t["level"] == "CRITICAL" and t["event"]["daddr"] == lab.peer4b


def run_poller(lab, records, user, exe: str, rounds: int, interval: float) -> list[dict]:
    poller = as_user(lab, user, exe, "-c", POLL, lab.peer4, str(rounds), str(interval))
    assert poller.wait(timeout=60) == 0
    return wait_until(lambda: (lambda s: s if len(s) == 16 * rounds else None)(
        judged(records, exe=os.path.realpath(exe), uid=uid_of(user), daddr=lab.peer4)),
        timeout=30, what=f"the poller's {16 * rounds} connections judged")


def test_a_poller_of_16_exporters_raises_no_threat(lab, pipeline, user):
    """A monitoring agent (an allowed executable) scraping 16 exporters,
    round after round: judged, never a scan, no pending threat."""
    seen = run_poller(lab, pipeline, user, POLLER, 4, 0.5)
    assert {e["event"]["dport"] for e in seen} == set(EXPORTERS)
    assert {e["level"] for e in seen} == {"INFO"}
    assert not [t for t in pending(pipeline) if t["event"].get("exe") == POLLER]


def test_a_poller_not_configured_is_learned_after_its_first_round(lab, pipeline, user):
    """The same poller run by the system python (not allowed), every 6 s:
    its first round of 16 ports looks exactly like a scan (documented);
    from the second round on its destinations are its baseline (seen again
    5 s or more later) and nothing more is a scan."""
    seen = run_poller(lab, pipeline, user, "/usr/bin/python3", 3, 6)
    seen.sort(key=lambda e: e["event"]["ts"])
    assert any("port-scan" in e["rule_ids"] for e in seen[:16])
    assert [e["level"] for e in seen[16:]] == ["INFO"] * 32, [e["reason"] for e in seen[16:]]


def test_curl_fetching_many_pages_from_two_hosts_is_no_threat(lab, pipeline, user):
    hosts = (lab.peer4b, lab.peer4.rsplit(".", 1)[0] + ".10")
    c = as_user(lab, user, "curl", "-s", *[f"http://{h}/{i}" for i in range(20) for h in hosts],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    c.wait(timeout=60)   # the listeners close at once: curl reports empty replies; the connects happened
    uid = uid_of(user)
    seen = wait_until(lambda: (lambda s: s if len(s) >= 40 else None)(
        judged(pipeline, exe="/usr/bin/curl", uid=uid)), timeout=30, what="curl's connections judged")
    assert {e["level"] for e in seen} == {"INFO"}
    assert not [t for t in pending(pipeline) if t["event"].get("exe") == "/usr/bin/curl"
                and t["event"]["uid"] == uid]
