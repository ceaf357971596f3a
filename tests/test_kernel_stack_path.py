"""Kernel tests of the stack's per-flow path, the process of accepted
connections and IPv6 extension headers (issue 17): real packets between the
lab's namespaces, real listeners and a real accept(), read back from the
loader's stream and records/stack.json."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from analyzer_support import lines, run_analyzer

from netlab import (lab,  # noqa: F401  (module-scoped fixture)
                    kernel_test_skip_reason, read_json, start_loader, validate, wait_until)

SKIP = kernel_test_skip_reason()
WAIT = 30.0   # deadline for the loader's next intervals: generous, the machine may be busy
pytestmark = pytest.mark.skipif(SKIP is not None, reason=str(SKIP))


@pytest.fixture(scope="module")
def loader(lab, tmp_path_factory):
    lp = start_loader(lab, tmp_path_factory, "--stack-interval", "0.3", "--no-xdp", "--stack-path")
    yield lp
    assert lp.stop() == 0


SERVER = """
import os, socket, sys
s = socket.socket(socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET)
s.bind((sys.argv[1], 0)); s.listen()
print(os.getpid(), s.getsockname()[1], flush=True)
c, peer = s.accept(); n = 0
print(peer[1], flush=True)
while True:
    b = c.recv(65536)
    if not b: break
    n += len(b)
c.sendall(str(n).encode()); c.close()
"""

CLIENT = """
import socket, sys
c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=60)
for _ in range(64): c.sendall(b"x" * 4096)
c.shutdown(socket.SHUT_WR); print(c.recv(100).decode(), flush=True); c.close()
"""


def inbound_connection(lab) -> tuple[int, int, int]:
    """The peer connects to a listener in the dut's namespace and sends
    256 KiB; returns (the accepting process's pid, the port, the client's port)."""
    server = subprocess.Popen(["ip", "netns", "exec", lab.dut, "python3", "-c", SERVER, lab.dut4],
                              stdout=subprocess.PIPE, text=True)
    try:
        pid, port = map(int, server.stdout.readline().split())
        client = subprocess.run(["ip", "netns", "exec", lab.peer, "python3", "-c", CLIENT, lab.dut4, str(port)],
                                capture_output=True, text=True, timeout=120)
        assert client.returncode == 0, client.stderr
        assert int(client.stdout) == 64 * 4096
        cport = int(server.stdout.readline())
        assert server.wait(timeout=30) == 0
        return pid, port, cport
    finally:
        if server.poll() is None:
            server.kill()
            server.wait(timeout=30)


def stack_path(loader, pred, what: str, after: str = "") -> dict:
    """The first path in a stack.json written after `after` (an ISO time) matching pred."""
    def found():
        doc = read_json(loader.records / "stack.json") or {}
        if doc.get("updated_at", "") <= after:
            return None
        return next((p for p in doc.get("paths", []) if pred(p)), None)
    return wait_until(found, WAIT, what=what)


def closed_at(loader, port: int) -> str:
    """When the loader reported the server side of the connection on `port`
    closed: every packet of it was counted in that interval or before."""
    ev = loader.wait_for(lambda e: e["type"] == "tcp_health" and e["final"] and e["sport"] == port,
                         WAIT, f"final tcp_health of the server side on port {port}")
    return ev["ts"]


def test_an_accepted_connection_has_the_accepting_process(lab, loader):
    pid, port, cport = inbound_connection(lab)
    # Both ends' final reports, in whatever order the loader emits them.
    final = {}

    def both(e):
        if e["type"] == "tcp_health" and e["final"] and {e["sport"], e["dport"]} == {port, cport}:
            final[e["sport"]] = validate(e)
        return len(final) == 2
    loader.wait_for(both, WAIT, f"final tcp_health of both ends of the connection to port {port}")
    ev = final[port]
    assert (ev["saddr"], ev["daddr"], ev["direction"]) == (lab.dut4, lab.peer4, "inbound")
    assert (ev["pid"], ev["comm"], ev["uid"]) == (pid, "python3", 0)
    # The accepted child socket is born SYN_RECV, then ESTABLISHED.
    assert [s["state"] for s in ev["states"]][:2] == ["SYN_RECV", "ESTABLISHED"] and ev["state"] == "CLOSE"
    assert ev["queue_drops"] == 0   # it read all it was sent
    # The client's side (the peer's namespace) is an outbound connection of another process.
    out = final[cport]
    assert out["direction"] == "outbound" and out["pid"] not in (None, pid)


def test_a_tcp_flow_shows_its_path_with_counts_and_latency(lab, loader):
    _, port, cport = inbound_connection(lab)
    p = stack_path(loader, lambda p: (p["src"], p["sport"], p["dst"], p["dport"], p["proto"])
                   == (lab.peer4, cport, lab.dut4, port, 6), "the client->server flow's path",
                   after=closed_at(loader, port))
    edges = {(e["from"], e["to"]): e for e in p["edges"]}
    # Every segment of the flow was received; the data segments went on to
    # TCP and were copied to the reading process.
    assert p["packets"] == edges["start", "receive"]["count"] == p["nodes"]["receive"] > 0
    assert edges["receive", "tcp"]["count"] > 0
    assert edges["tcp", "socket"]["count"] > 0
    for key in (("receive", "tcp"), ("tcp", "socket")):
        assert edges[key]["median_us"] > 0 and edges[key]["mean_us"] > 0, edges[key]
    assert edges["start", "receive"]["median_us"] is None
    # No hook is counted more often than the packets that reached the one before it.
    for (a, b), e in edges.items():
        if a != "start":
            assert e["count"] <= p["nodes"][a], (a, b, p)


UDP_SEND = """
import socket, sys
dst, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
# A destination-options and a hop-by-hop header, each one PadN option: the
# kernel builds them into every datagram (IPV6_DSTOPTS 59, IPV6_HOPOPTS 54).
pad = bytes([0, 0, 1, 4, 0, 0, 0, 0])
s.setsockopt(socket.IPPROTO_IPV6, 59, pad)
s.setsockopt(socket.IPPROTO_IPV6, 54, pad)
s.bind((sys.argv[4], 0))
print(s.getsockname()[1], flush=True)
for _ in range(n): s.sendto(b"probe", (dst, port))
"""


def test_ipv6_extension_headers_are_skipped_to_the_ports(lab, loader):
    """Datagrams with hop-by-hop and destination-options headers to a closed
    port: the drop and the path both name UDP and its ports."""
    port, n = 5999, 12
    r = subprocess.run(["ip", "netns", "exec", lab.peer, "python3", "-c", UDP_SEND, lab.dut6, str(port), str(n),
                        lab.peer6], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    sport = int(r.stdout)
    seen = 0

    def enough(e):
        nonlocal seen
        if e["type"] == "drops":   # validated when it holds this flow (see events_have_all below)
            n_mine = sum(f["count"] for f in e["flows"] if f["src"] == lab.peer6 and f["dport"] == port
                         and f["proto"] == 17 and f["reason"] == "NO_SOCKET")
            if n_mine:
                validate(e)
            seen += n_mine
        return seen >= n
    last = loader.wait_for(enough, WAIT, "NO_SOCKET drops of the IPv6 datagrams, by port")
    assert seen == n
    p = stack_path(loader, lambda p: (p["src"], p["sport"], p["dport"], p["proto"]) == (lab.peer6, sport, port, 17),
                   "the IPv6 flow's path", after=last["ts"])
    edges = {(e["from"], e["to"]): e["count"] for e in p["edges"]}
    assert edges == {("start", "receive"): n, ("receive", "dropped NO_SOCKET"): n}, p


def test_investigating_a_host_shows_its_drops_and_tcp_health(lab, loader, tmp_path):
    """`netsentinel events --addr PEER --investigate`: beside the stored
    events, what the loader's stack.json holds of that host."""
    pid, port, cport = inbound_connection(lab)
    subprocess.run(["ip", "netns", "exec", lab.peer, "hping3", "-q", "-S", "-p", "7", "-c", "10", "-i", "u2000",
                    lab.dut4], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=30)

    def ready():
        doc = read_json(loader.records / "stack.json") or {}
        n = sum(d["count"] for d in doc.get("drop_flows", [])
                if (d["src"], d["dport"], d["reason"]) == (lab.peer4, 7, "NO_SOCKET"))
        return doc if n >= 10 and any(c["pid"] == pid for c in doc.get("connections", [])) else None
    wait_until(ready, WAIT, what="the drops and the accepted connection in stack.json")
    # An event store made by the analyzer from what the loader said, beside a copy of stack.json.
    records = tmp_path / "records"
    records.mkdir()
    shutil.copy(loader.records / "stack.json", records / "stack.json")
    r = run_analyzer(tmp_path, ["--backend", "rules"], lines(loader.all_events), records=records)
    assert r.returncode == 0, r.stderr[-2000:]

    def investigate(*args: str) -> subprocess.CompletedProcess:
        out = subprocess.run([sys.executable, "-m", "netsentinel", "--records", str(records), "events",
                              "--investigate", *args], capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        return out
    stack = json.loads(investigate("--addr", lab.peer4, "--format", "json").stdout)["summary"]["stack"]
    conn = next(c for c in stack["connections"] if c["sport"] == port)
    assert (conn["pid"], conn["direction"], conn["daddr"]) == (pid, "inbound", lab.peer4)
    assert all(lab.peer4 in (c["saddr"], c["daddr"]) for c in stack["connections"])
    drop = next(d for d in stack["drops"] if d["dport"] == 7)
    assert (drop["src"], drop["reason"]) == (lab.peer4, "NO_SOCKET") and drop["count"] >= 10
    assert any(p["src"] == lab.peer4 and p["sport"] == cport for p in stack["paths"])
    table = investigate("--addr", lab.peer4).stdout
    assert f"dropped: {drop['count']} x NO_SOCKET {lab.peer4} -> {lab.dut4}:7" in table
    assert f"inbound {lab.dut4}:{port} -> {lab.peer4}:{cport} python3[{pid}]" in table
    # Following the process: its connections, not the host's drops to a closed port.
    stack = json.loads(investigate("--process", "python3", "--format", "json").stdout)["summary"]["stack"]
    assert any(c["pid"] == pid for c in stack["connections"])
    assert not any(d["dport"] == 7 for d in stack["drops"])


UDP_SINK = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1)   # the kernel's minimum: a few datagrams
s.bind((sys.argv[1], 0))
print(s.getsockname()[1], s.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF), flush=True)
s.setblocking(False); n = 0
for _ in sys.stdin:                                     # asked: read what was kept so far
    try:
        while True:
            s.recv(2048); n += 1
    except BlockingIOError:
        pass
    print(n, flush=True)
"""

UDP_FLOOD = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for _ in range(int(sys.argv[3])): s.sendto(b"z" * 1000, (sys.argv[1], int(sys.argv[2])))
"""


def test_a_full_receive_queue_is_counted_for_its_socket(lab, loader):
    """A UDP socket that does not read while 200 datagrams arrive: every one
    it could not keep is a SOCKET_RCVBUFF drop of that flow, no more, and of
    that socket, with its memory and the process that holds it."""
    n = 200
    sink = subprocess.Popen(["ip", "netns", "exec", lab.dut, "python3", "-c", UDP_SINK, lab.dut4],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        port, rcvbuf = map(int, sink.stdout.readline().split())
        r = subprocess.run(["ip", "netns", "exec", lab.peer, "python3", "-c", UDP_FLOOD, lab.dut4, str(port), str(n)],
                           capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stderr
        kept = 0

        def settled():
            """Every datagram either read by the sink or dropped, by the
            loader's count (read again each time: one still on its way when
            the sink last read is kept or dropped later, never both)."""
            nonlocal kept
            sink.stdin.write("read\n")
            sink.stdin.flush()
            kept = int(sink.stdout.readline())
            doc = read_json(loader.records / "stack.json") or {}
            d = next((d for d in doc.get("drop_flows", []) if (d["src"], d["dst"], d["dport"], d["reason"])
                      == (lab.peer4, lab.dut4, port, "SOCKET_RCVBUFF")), None)
            return d if d and d["count"] + kept == n else None
        dropped = wait_until(settled, WAIT, what=f"{n} datagrams read or counted as dropped")["count"]
        assert 0 < kept < n
        # The same count per flow (drop_flows) and per socket (full_queues),
        # in stack.json and summed over the `drops` events of the interval(s).
        on_stream = 0

        def mine(q):
            return (q["proto"], q["local"], q["port"]) == (17, lab.dut4, port)

        def events_have_all(e):
            # Validated only when it holds this socket: under another test's
            # flood the stream is long, and a schema check of every event
            # would leave this reader behind it.
            nonlocal on_stream
            if e["type"] == "drops":
                n_mine = sum(q["drops"] for q in e.get("full_queues", []) if mine(q))
                if n_mine:
                    validate(e)
                on_stream += n_mine
            return on_stream >= dropped
        loader.wait_for(events_have_all, WAIT, f"{dropped} full-queue drops of port {port} on the stream")
        assert on_stream == dropped

        def all_in():
            doc = read_json(loader.records / "stack.json") or {}
            d = next((d for d in doc.get("drop_flows", []) if (d["src"], d["dst"], d["dport"], d["reason"])
                      == (lab.peer4, lab.dut4, port, "SOCKET_RCVBUFF")), None)
            q = next((q for q in doc.get("full_queues", []) if mine(q)), None)
            return (d, q, doc) if d and q and d["count"] == q["drops"] == dropped else None
        d, q, doc = wait_until(all_in, WAIT, what=f"{dropped} SOCKET_RCVBUFF drops of the flow and the socket")
        assert (q["pid"], q["comm"], q["uid"], q["reason"]) == (sink.pid, "python3", 0, "SOCKET_RCVBUFF")
        assert q["exe"] and "python3" in q["exe"] and q["inode"] > 0
        assert (q["last_src"], q["rcvbuf"]) == (lab.peer4, rcvbuf)
        # The socket's memory at the last drop: no room for one more datagram of this size.
        assert 1000 < q["truesize"] and q["rmem_alloc"] + q["truesize"] > rcvbuf
        assert isinstance(doc["totals"].get("rcvqueue_full"), int) and doc["rcvq_off_reason"] is None
    finally:
        sink.kill()
        sink.wait(timeout=30)


def test_no_stack_path_keeps_drops_and_says_the_path_is_off(lab, tmp_path_factory):
    lp = start_loader(lab, tmp_path_factory, "--stack-interval", "0.3", "--no-xdp", "--no-stack-path")
    try:
        doc = wait_until(lambda: read_json(lp.records / "stack.json"), WAIT, what="stack.json")
        assert doc["path_off_reason"].startswith("the per-flow path is off: not asked for (--stack-path")
        inbound_connection(lab)
        subprocess.run(["ip", "netns", "exec", lab.peer, "hping3", "-q", "-S", "-p", "7", "-c", "3", "-i", "u2000",
                        lab.dut4], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=30)
        lp.wait_for(lambda e: e["type"] == "drops" and any(f["src"] == lab.peer4 and f["dport"] == 7
                                                            for f in e["flows"]), WAIT, "the SYNs' drops")
        doc = wait_until(lambda: (lambda d: d if d and d["totals"]["drops"] else None)(
            read_json(lp.records / "stack.json")), WAIT, what="drops in stack.json")
        assert doc["paths"] == [] and "path_edges" not in doc["totals"]
        assert any("--stack-path turns it on" in str(e.get("message")) for e in lp.all_events
                   if e["type"] == "warning")
    finally:
        assert lp.stop() == 0
