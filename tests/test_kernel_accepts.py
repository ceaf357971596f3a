"""Kernel test of the `accepts` view (issue 13): handshakes completed on a
real listener in the lab's host under test, counted per client and port in
the kernel (sock:inet_sock_set_state SYN_RECV -> ESTABLISHED), reach the
event stream; half-open SYNs from hping3 to the same port do not."""

from __future__ import annotations

import subprocess

import pytest

from netlab import (lab,  # noqa: F401  (module-scoped fixture)
                    kernel_test_skip_reason, start_loader, stop_loader, validate)
from netsentinel.testing.inbound import connector, listener

SKIP = kernel_test_skip_reason()
pytestmark = pytest.mark.skipif(SKIP is not None, reason=str(SKIP))
PORT = 2222


@pytest.fixture(scope="module")
def loader(lab, tmp_path_factory):
    lp = start_loader(lab, tmp_path_factory, "--stack-interval", "0.3")
    srvs = [listener(lab.dut, lab.dut4, PORT), listener(lab.dut, lab.dut6, PORT)]
    yield lp
    for srv in srvs:
        srv.terminate()
        srv.wait(timeout=10)
    stop_loader(lab, lp)


def accepted(lp, src: str, port: int, need: int, timeout: float = 15.0) -> tuple[int, list[dict]]:
    seen, n = [], 0

    def enough(e):
        nonlocal n
        if e["type"] != "accepts":
            return False
        seen.append(validate(e))
        n += sum(r["count"] for r in e["sources"] if r["src"] == src and r["port"] == port)
        return n >= need
    lp.wait_for(enough, timeout, f"{need} accepts from {src} on port {port}")
    return n, seen


def test_completed_handshakes_are_counted_per_client_and_port(lab, loader):
    c = connector(lab.peer, lab.dut4, PORT, 12, 0.05)
    out, _ = c.communicate(timeout=60)
    assert out.strip() == "12"
    n, events = accepted(loader, lab.peer4, PORT, 12)
    assert n == 12            # each handshake once
    assert all(e["other_netns"] >= 0 and e["total"] >= 1 for e in events)


def test_ipv6_handshakes_are_counted(lab, loader):
    c = connector(lab.peer, lab.dut6, PORT, 3, 0.05, source=lab.peer6)
    assert c.communicate(timeout=60)[0].strip() == "3"
    n, _ = accepted(loader, lab.peer6, PORT, 3)
    assert n == 3


def test_half_open_syns_are_not_accepts(lab, loader):
    # hping3's SYNs get SYN-ACKs; the peer's kernel answers each with a RST: no handshake.
    subprocess.run(["ip", "netns", "exec", lab.peer, "hping3", "-q", "-S", "-p", str(PORT), "-c", "30",
                    "-i", "u2000", "-a", lab.peer4b, lab.dut4],
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=30)
    # A real handshake from the same address afterwards marks the end of the hping3 run.
    c = connector(lab.peer, lab.dut4, PORT, 1, 0.01, source=lab.peer4b)
    assert c.communicate(timeout=30)[0].strip() == "1"
    n, _ = accepted(loader, lab.peer4b, PORT, 1)
    assert n == 1


def cookies_received(lab) -> int:
    """TcpExt SyncookiesRecv of the host under test: cookies returned in ACKs."""
    lines = [line.split() for line in lab.ns_exec(lab.dut, "cat", "/proc/net/netstat").stdout.splitlines()
             if line.startswith("TcpExt:")]
    return int(dict(zip(lines[0], lines[1]))["SyncookiesRecv"])


def test_syn_cookie_handshakes_are_accepts(lab, loader):
    # tcp_syncookies=2: every SYN is answered with a cookie, no request is
    # kept; the source proves itself only by returning it (issue 13).
    old = lab.ns_exec(lab.dut, "sysctl", "-n", "net.ipv4.tcp_syncookies").stdout.strip()
    lab.ns_exec(lab.dut, "sysctl", "-w", "net.ipv4.tcp_syncookies=2", check=True)
    try:
        before = cookies_received(lab)
        c = connector(lab.peer, lab.dut4, PORT, 5, 0.05, source=lab.peer4b)
        assert c.communicate(timeout=60)[0].strip() == "5"
        assert cookies_received(lab) - before == 5     # each handshake by cookie
        n, _ = accepted(loader, lab.peer4b, PORT, 5)
        assert n == 5
    finally:
        lab.ns_exec(lab.dut, "sysctl", "-w", f"net.ipv4.tcp_syncookies={old}", check=True)
