"""Issue 13 in the namespace lab, end to end (the real loader | the real
analyzer, real tools): a brute force on port 22 is a HIGH threat; an
auto-ban cannot be aimed at a server this host uses; a real iperf3 UDP test
is not blocked; an open-port SYN flood from a source that never completed a
handshake is detected but not banned (spoofable evidence), while a UDP flood
at hping3's 2-core rate from a proven source is CRITICAL and blocked."""

from __future__ import annotations

import subprocess
import time

import pytest

from netlab import (lab,  # noqa: F401  (module-scoped fixture)
                    kernel_test_skip_reason, ns_connect, pipeline_with_listeners, read_json, sh, wait_until)
from netsentinel.records import ANALYZER_LOG, ANALYZER_STATUS, BANNED_IPS, DASHBOARD_LOGS, PENDING_THREATS
from netsentinel.testing.inbound import connector, listener
from netsentinel.testing.lab import lab_octet

SKIP = kernel_test_skip_reason()
pytestmark = pytest.mark.skipif(SKIP is not None, reason=str(SKIP))
WEB = 8080


@pytest.fixture(scope="module")
def pipeline(lab, tmp_path_factory):
    yield from pipeline_with_listeners(lab, tmp_path_factory, (22, WEB))


def peer_address(lab, n: int) -> str:
    src = f"10.{lab_octet()}.{lab.n}.{90 + n}"
    sh("ip", "-n", lab.peer, "addr", "add", f"{src}/24", "dev", lab.peer_if, "nodad")
    return src


def threat_for(rec, src, category=None):
    return next((t for t in read_json(rec / PENDING_THREATS, []) or []
                 if t.get("target") == src and category in (None, t.get("category"))), None)


def banned(rec, src) -> bool:
    return src in (read_json(rec / BANNED_IPS, {}) or {})


def analyzer_said(rec, text) -> bool:
    return text in (rec / ANALYZER_LOG).read_text()


def prove(rec, lab, src) -> None:
    """One completed handshake from src, seen by the analyzer."""
    def accepts():
        return ((read_json(rec / ANALYZER_STATUS) or {}).get("input", {}).get("other_events", {})
                .get("accepts", 0))
    before = accepts()
    assert connector(lab.peer, lab.dut4, WEB, 1, 0.01, source=src).communicate(timeout=30)[0].strip() == "1"
    wait_until(lambda: accepts() > before, 10, what="the analyzer to see the handshake")


def hping(lab, seconds, *args) -> subprocess.Popen:
    return subprocess.Popen(["ip", "netns", "exec", lab.peer, "timeout", "-s", "INT", str(seconds),
                             "hping3", "-q", *args, lab.dut4],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def test_spoofed_icmp_flood_bearing_a_used_servers_address_bans_nothing(lab, pipeline):
    rec = pipeline
    server = peer_address(lab, 0)
    srv = listener(lab.peer, server, 443)
    try:
        # The host uses this server. Its `connection` event is on the stream
        # before any of the flood's `flow` events: the analyzer reads it first.
        assert ns_connect(lab, server, 443)["errno"] == 0
        flood = hping(lab, 5, "--icmp", "-i", "u500", "-a", server)   # ~2,000 echo requests/s
        try:
            t = wait_until(lambda: (lambda t: t if t and t["level"] == "CRITICAL" else None)(
                threat_for(rec, server)), 5, 0.02, what="CRITICAL icmp_flood threat")
            assert t["category"] == "icmp_flood"
            wait_until(lambda: analyzer_said(rec, f"auto-block of {server} withheld: never auto-banned: "
                                                  "this host connected to it (port 443)"),
                       5, what="the withheld auto-block, with why")
            assert ns_connect(lab, server, 443)["errno"] == 0       # during the flood
        finally:
            flood.wait(timeout=20)
        assert ns_connect(lab, server, 443)["errno"] == 0
        assert threat_for(rec, server)["status"] == "pending"
        assert not banned(rec, server)
    finally:
        srv.terminate()
        srv.wait(timeout=10)


def test_a_real_iperf3_udp_test_is_not_blocked(lab, pipeline):
    rec = pipeline
    src = peer_address(lab, 1)
    server = subprocess.Popen(["ip", "netns", "exec", lab.dut, "iperf3", "-s", "-1", "-B", lab.dut4],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: "5201" in sh("ip", "netns", "exec", lab.dut, "ss", "-ltn").stdout, 10,
                   what="iperf3 listening")
        r = subprocess.run(["ip", "netns", "exec", lab.peer, "iperf3", "-c", lab.dut4, "-B", src, "-u",
                            "-b", "100M", "-t", "6", "--json"], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stdout[-2000:] + r.stderr
    finally:
        server.wait(timeout=20)
    # It was over the UDP flood rate, and seen as the session it is.
    logs = (read_json(rec / DASHBOARD_LOGS) or {}).get("entries", [])
    streams = [e for e in logs if e["event"].get("src") == src and e["category"] == "udp_session_stream"]
    assert streams and all(e["level"] == "MEDIUM" for e in streams), [e["category"] for e in logs
                                                                       if e["event"].get("src") == src]
    assert "established inbound TCP session" in streams[0]["reason"]
    print(f"iperf3: {len(streams)} windows over the UDP flood rate, all a session")
    assert not banned(rec, src)
    assert threat_for(rec, src) is None          # not a flood: no threat at all


def test_open_port_syn_flood_from_an_unproven_source_is_detected_not_banned(lab, pipeline):
    rec = pipeline
    src = peer_address(lab, 2)
    t0 = time.monotonic()
    flood = hping(lab, 4, "-S", "-p", str(WEB), "-i", "u500", "-a", src)
    try:
        t = wait_until(lambda: (lambda t: t if t and t["level"] == "CRITICAL" else None)(
            threat_for(rec, src, "syn_flood")), 5, 0.02, what="CRITICAL syn_flood threat")
        print(f"open-port SYN flood, unproven source: detected {time.monotonic() - t0:.2f}s after it started")
        wait_until(lambda: analyzer_said(rec, f"auto-block of {src} withheld: spoofable evidence only"),
                   5, what="the withheld auto-block")
        # Not banned: rate-limited, that source alone (issue 13: limited within 2 s).
        rule = wait_until(lambda: next((r for r in (read_json(rec / "filter_rules.json", {}) or {})
                                        .get("rules", []) if r.get("id") == f"src-tcp-{src}"), None),
                          5, 0.02, what="the per-source rate limit in force")
        print(f"open-port SYN flood, unproven source: rate-limited {time.monotonic() - t0:.2f}s after it "
              f"started ({rule['rate_pps']} SYN/s)")
        wait_until(lambda: next((r.get("hits", 0) for r in (read_json(rec / "filter_rules.json", {}) or {})
                                 .get("rules", []) if r.get("id") == f"src-tcp-{src}"), 0) > 0,
                   10, what="SYNs over the cap dropped (the rule's hits)")
    finally:
        flood.wait(timeout=20)
    assert not banned(rec, src) and t["status"] == "pending"


def test_udp_flood_at_a_two_core_rate_from_a_proven_source_is_blocked(lab, pipeline):
    rec = pipeline
    src = peer_address(lab, 3)
    prove(rec, lab, src)
    t0 = time.monotonic()
    # -i u100: 3,000-4,100/s measured here with the machine loaded (6,300 when
    # idle); u50 keeps it over 3,000 whatever the load. The 3,000 boundary
    # itself: tests/test_floods.py on the lab windows.
    flood = hping(lab, 5, "--udp", "-p", "53", "-i", "u50", "-a", src)
    try:
        t = wait_until(lambda: (lambda t: t if t and t["level"] == "CRITICAL" else None)(
            threat_for(rec, src, "udp_flood")), 5, 0.02, what="CRITICAL udp_flood threat")
        print(f"udp flood: detected {time.monotonic() - t0:.2f}s after it started; {t['reason']}")
        wait_until(lambda: (read_json(rec / BANNED_IPS, {}).get(src) or {}).get("drops", 0) > 500, 6,
                   what="XDP drops of the flood")
    finally:
        flood.wait(timeout=20)
    assert read_json(rec / BANNED_IPS)[src]["source"] == "auto-flood"


def test_brute_force_on_port_22_for_a_minute_is_high(lab, pipeline):
    rec = pipeline
    src = peer_address(lab, 4)
    c = connector(lab.peer, lab.dut4, 22, 120, 0.5, source=src)     # 2/s for 60 s
    out, _ = c.communicate(timeout=120)
    assert int(out) == 120
    t = wait_until(lambda: threat_for(rec, src, "brute_force"), 10, what="brute_force threat")
    assert (t["level"], t["status"], t["kind"]) == ("HIGH", "pending", "flood")
    assert t["event"]["port"] == 22 and t["event"]["count"] >= 60
    assert "on port 22" in t["reason"]
    assert not banned(rec, src)
