"""Kernel tests of stack visibility (issue 17): real packets from the peer
namespace are dropped by the real stack, and the loader's `drops` events
name the reason as the kernel spells it, the place, the interface and the
flow."""

from __future__ import annotations

import signal
import subprocess

import pytest

from netlab import (lab,  # noqa: F401  (module-scoped fixture)
                    ban_event, kernel_test_skip_reason, read_json, start_loader, stop_loader, validate,
                    wait_until, write_commands)
from netsentinel.testing.lab import start_pipeline
from netsentinel.kernel.stack import KFREE_SKB_FORMAT, Symbols, drop_reason_names

SKIP = kernel_test_skip_reason()
pytestmark = pytest.mark.skipif(SKIP is not None, reason=str(SKIP))


@pytest.fixture(scope="module")
def loader(lab, tmp_path_factory):
    lp = start_loader(lab, tmp_path_factory, "--stack-interval", "0.3")
    yield lp
    stop_loader(lab, lp)


def syns(lab, src: str, port: int, count: int = 20) -> None:
    """`count` SYNs from the peer (hping3 exits by itself after -c)."""
    subprocess.run(["ip", "netns", "exec", lab.peer, "hping3", "-q", "-S", "-a", src, "-p", str(port),
                    "-c", str(count), "-i", "u2000", lab.dut4],
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=30)


def dropped(lp, pred, what: str, need: int, timeout: float = 10.0) -> tuple[int, list[dict]]:
    """Sum the flow rows matching pred over `drops` events until `need` are
    seen; returns (count, the events seen)."""
    seen, n = [], 0

    def enough(e):
        nonlocal n
        if e["type"] != "drops":
            return False
        seen.append(validate(e))
        n += sum(f["count"] for f in e["flows"] if pred(f))
        return n >= need
    lp.wait_for(enough, timeout, what)
    return n, seen


def test_reason_names_come_from_the_tracepoint_format():
    names = drop_reason_names(KFREE_SKB_FORMAT.read_text())
    assert names[2] == "NOT_SPECIFIED"
    assert {"NO_SOCKET", "NETFILTER_DROP", "TCP_CSUM"} <= set(names.values())
    assert drop_reason_names("print fmt: \"x\"") == {}


def test_locations_are_symbolised_from_kallsyms():
    syms = Symbols()
    with open("/proc/kallsyms") as f:
        addr = next(int(p[0], 16) for p in map(str.split, f) if p[2] == "tcp_v4_rcv")
    assert syms.name(addr + 0x10) == "tcp_v4_rcv+0x10"


def test_syns_to_a_closed_port_are_no_socket(lab, loader):
    syns(lab, lab.peer4, 7, 20)
    n, events = dropped(loader, lambda f: f["src"] == lab.peer4 and f["dport"] == 7
                        and f["reason"] == "NO_SOCKET" and f["tcp_flags"] == 0x02,
                        "NO_SOCKET drops of the peer's SYNs", 20)
    assert n == 20     # each SYN dropped once, none double-counted
    sites = [s for e in events for s in e["sites"] if s["reason"] == "NO_SOCKET"]
    assert any(s["ifname"] == lab.dut_if and s["location"].startswith("tcp_v4_rcv+") for s in sites), sites
    assert sum(e["reasons"].get("NO_SOCKET", 0) for e in events) >= 20


def test_an_nft_drop_rule_is_netfilter_drop(lab, loader):
    rules = ("table inet nstack {\n chain input {\n type filter hook input priority 0;\n"
             " tcp dport 8081 drop\n }\n}\n")
    r = subprocess.run(["ip", "netns", "exec", lab.dut, "nft", "-f", "-"], input=rules,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    try:
        syns(lab, lab.peer4, 8081, 15)
        n, events = dropped(loader, lambda f: f["src"] == lab.peer4 and f["dport"] == 8081
                            and f["reason"] == "NETFILTER_DROP", "NETFILTER_DROP drops", 15)
        assert n == 15
        sites = [s for e in events for s in e["sites"] if s["reason"] == "NETFILTER_DROP"]
        # The verdict is given in nf_tables' chain walk (nf_hook_slow on older kernels).
        assert any(s["location"].startswith(("nft_do_chain+", "nf_hook_slow+")) and
                   s["ifname"] == lab.dut_if for s in sites), sites
        # Not also counted as NO_SOCKET: the firewall ate them first.
        assert not any(f["dport"] == 8081 and f["reason"] != "NETFILTER_DROP"
                       for e in events for f in e["flows"] if f["src"] == lab.peer4)
    finally:
        subprocess.run(["ip", "netns", "exec", lab.dut, "nft", "delete", "table", "inet", "nstack"])


def test_xdp_drops_of_a_banned_source_are_counted_once(lab, loader):
    write_commands(loader.records, [{"action": "ban", "ip": lab.peer4b, "reason": "stack test"}])
    ban_event(loader, lab.peer4b, result="applied")
    syns(lab, lab.peer4b, 7, 25)
    seen = []

    def xdp_enough(e):
        if e["type"] == "drops":
            seen.append(validate(e))
        return sum(x["xdp"]["ours"] for x in seen) >= 25
    loader.wait_for(xdp_enough, 10, "our XDP drops in drops events")
    ours = sum(e["xdp"]["ours"] for e in seen)
    assert ours == 25
    # On veth the kernel also frees each dropped skb: shown at an XDP site,
    # and the total counts each packet once.
    flows = [f for e in seen for f in e["flows"] if f["src"] == lab.peer4b]
    assert sum(f["count"] for f in flows) == 25, flows
    xdp_sites = [s for e in seen for s in e["sites"] if s["xdp"] and s["ifname"] == lab.dut_if]
    assert sum(s["count"] for s in xdp_sites) == 25, xdp_sites
    for e in seen:
        assert e["total"] == sum(e["reasons"].values()) + e["xdp"]["added"]
    # Every drop of ours was already an skb drop: none is added a second time.
    assert sum(e["xdp"]["added"] for e in seen) == 0, [e["xdp"] for e in seen]


SINK = """
import socket, sys
s = socket.socket(); s.bind((sys.argv[1], 0)); s.listen()
print(s.getsockname()[1], flush=True)
c, _ = s.accept(); n = 0
while True:
    b = c.recv(65536)
    if not b: break
    n += len(b)
c.sendall(str(n).encode()); c.close()
"""

SEND = """
import os, socket, sys
print(os.getpid(), flush=True)
c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=60)
for _ in range(64): c.sendall(b"x" * 4096)
c.shutdown(socket.SHUT_WR); print(c.recv(100).decode(), flush=True); c.close()
"""


def lose_packets(lab, port: int, percent: int) -> str:
    """Lose `percent`% of the segments towards the peer's `port`: netem on the
    dut's veth where the kernel has it, else a random nft drop in the peer
    (this kernel has no sch_netem). Returns which was used."""
    r = lab.ns_exec(lab.dut, "tc", "qdisc", "add", "dev", lab.dut_if, "root", "netem", "loss", f"{percent}%")
    if r.returncode == 0:
        return "netem"
    print(f"netem unavailable ({r.stderr.strip()}): losing packets with nft numgen instead")
    rules = (f"table inet nsloss {{\n chain input {{\n type filter hook input priority 0;\n"
             f" tcp dport {port} numgen random mod 100 < {percent} drop\n }}\n}}\n")
    r = subprocess.run(["ip", "netns", "exec", lab.peer, "nft", "-f", "-"], input=rules,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return "nft"


def test_packet_loss_shows_as_retransmits_of_that_connection(lab, loader):
    sink = subprocess.Popen(["ip", "netns", "exec", lab.peer, "python3", "-c", SINK, lab.peer4],
                            stdout=subprocess.PIPE, text=True)
    how = None
    try:
        port = int(sink.stdout.readline())
        how = lose_packets(lab, port, 30)
        send = subprocess.run(["ip", "netns", "exec", lab.dut, "python3", "-c", SEND, lab.peer4, str(port)],
                              capture_output=True, text=True, timeout=120)
        assert send.returncode == 0, send.stderr
        pid, got = map(int, send.stdout.split())
        assert got == 64 * 4096
        ev = validate(loader.wait_for(
            lambda e: e["type"] == "tcp_health" and e["final"] and e["pid"] == pid,
            15, f"final tcp_health of pid {pid}"))
        assert (ev["daddr"], ev["dport"], ev["direction"]) == (lab.peer4, port, "outbound")
        assert ev["comm"] == "python3"
        assert ev["retransmits"] > 0, ev
        assert ev["srtt_ms"] > 0 and ev["cwnd"] > 0
        assert [s["state"] for s in ev["states"]][:2] == ["SYN_SENT", "ESTABLISHED"]
        assert ev["states"][-1]["state"] == "CLOSE" and ev["state"] == "CLOSE"
        # The Stack page's file has it too, beside the drop history.
        doc = wait_until(lambda: (lambda d: d if d and any(c["pid"] == pid for c in d["connections"])
                                  else None)(read_json(loader.records / "stack.json")),
                         10, what="the connection in stack.json")
        assert doc["history"] and doc["sites"] and doc["totals"]["drops"] > 0
    finally:
        if how == "netem":
            lab.ns_exec(lab.dut, "tc", "qdisc", "del", "dev", lab.dut_if, "root")
        elif how == "nft":
            lab.ns_exec(lab.peer, "nft", "delete", "table", "inet", "nsloss")
        sink.kill()
        sink.wait(timeout=30)


def test_no_stack_loads_no_stack_program(lab, tmp_path_factory):
    lp = start_loader(lab, tmp_path_factory, "--no-stack", "--no-xdp")
    try:
        syns(lab, lab.peer4, 7, 5)
        ev = lp.wait_for(lambda e: e["type"] == "stats", 10, "stats event")
        assert "stack" not in ev
        assert not any(e["type"] in ("drops", "tcp_health") for e in lp.all_events)
    finally:
        assert lp.stop() == 0


def test_syns_to_many_closed_ports_are_an_inbound_scan(lab, tmp_path):
    """loader | analyzer: a scan far too slow for the flood thresholds
    (~50 SYNs/s) shows as NO_SOCKET drops across ports -> one HIGH threat."""
    records = tmp_path / "records"
    records.mkdir()
    cfg = tmp_path / "filter_config.json"
    cfg.write_text("{}")
    loader, analyzer = start_pipeline(lab, records, cfg, ["--backend", "rules", "--status-interval", "0.3"],
                                      ["--no-xdp", "--stack-interval", "0.3"])
    try:
        wait_until(lambda: (read_json(records / "analyzer_status.json") or {})
                   .get("input", {}).get("other_events", {}).get("startup"), 60, what="pipeline startup")
        subprocess.run(["ip", "netns", "exec", lab.peer, "hping3", "-q", "-S", "-a", lab.peer4,
                        "-p", "++3000", "-c", "30", "-i", "u20000", lab.dut4],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60)

        def scan_threats():
            # Tracepoints see every namespace: other traffic on this machine may
            # raise threats too; this test owns only its peer's address.
            return [t for t in read_json(records / "pending_threats.json", [])
                    if t["status"] == "pending" and t["target"] == lab.peer4]
        found = wait_until(scan_threats, 15, what="an inbound scan threat")
        assert len(found) == 1, found
        (t,) = found
        assert t["rule_ids"] == ["stack:inbound_scan"]
        assert (t["target"], t["category"], t["level"]) == (lab.peer4, "port_scan", "HIGH")
        assert "NO_SOCKET" in t["reason"] and lab.dut4 in t["reason"]
    finally:
        loader.send_signal(signal.SIGTERM)
        assert loader.wait(timeout=30) == 0
        analyzer.wait(timeout=30)
    assert analyzer.returncode == 0, (records / "analyzer.log").read_text()[-2000:]
