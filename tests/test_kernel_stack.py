"""Kernel tests of stack visibility (issue 17): real packets from the peer
namespace are dropped by the real stack, and the loader's `drops` events
name the reason as the kernel spells it, the place, the interface and the
flow."""

from __future__ import annotations

import subprocess

import pytest

from netlab import (lab,  # noqa: F401  (module-scoped fixture)
                    ban_event, kernel_test_skip_reason, start_loader, stop_loader, validate,
                    write_commands)
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
                        and f["reason"] == "NO_SOCKET", "NO_SOCKET drops from the peer", 20)
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
