"""netsentinel/netlink.py against the kernel and `ip` in a namespace of its
own: the addresses, default gateways and SSH peers the protected set is
made of (what `ip -j` and /proc/net/tcp told netinfo before) are the same
as iproute2 sees them, multipath and IPv4-via-IPv6 routes and other tables
included."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

NS = f"nsnl{os.getpid()}"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(*cmd: str) -> str:
    return subprocess.run(["ip", "netns", "exec", NS, *cmd], capture_output=True, text=True, check=True).stdout


@pytest.fixture(scope="module")
def netns():
    if os.geteuid() != 0:
        pytest.skip("needs root to make a network namespace")
    subprocess.run(["ip", "netns", "add", NS], check=True)
    try:
        for cmd in ("link add d0 type veth peer name d1", "link set d1 up", "link set d0 up", "link set lo up",
                    "addr add 10.9.0.1/24 dev d0", "addr add 10.9.0.2/24 dev d0",
                    "addr add 2001:db8:9::1/64 dev d0 nodad",
                    "route add default via 10.9.0.254",
                    "route add default metric 100 nexthop via 10.9.0.253 dev d0 nexthop via 10.9.0.252 dev d0",
                    "route add default metric 200 via inet6 fe80::1 dev d0",
                    "route add default via 10.9.0.99 table 100",
                    "-6 route add default via 2001:db8:9::fe"):
            run("ip", *cmd.split())
        yield NS
    finally:
        subprocess.run(["ip", "netns", "del", NS], check=False)


def netinfo_in_ns(code: str):
    out = run(sys.executable, "-c", f"import json, sys; sys.path.insert(0, {ROOT!r}); "
                                    f"from netsentinel import netinfo; print(json.dumps({code}))")
    return json.loads(out)


def ip_gateways() -> set[str]:
    out = set()
    for fam in ("-4", "-6"):
        for r in json.loads(run("ip", "-j", fam, "route", "show", "default")):
            hops = r.get("nexthops") or [r]
            for h in hops:
                if "gateway" in h:
                    out.add(h["gateway"])
                elif isinstance(h.get("via"), dict):
                    out.add(h["via"]["host"])
    return out


def test_addresses_are_those_ip_addr_lists(netns):
    want = {a["local"] for link in json.loads(run("ip", "-j", "addr", "show"))
            for a in link.get("addr_info", []) if "local" in a}
    got = netinfo_in_ns("[str(n.network_address) for n in netinfo.local_addresses()]")
    assert sorted(got) == sorted(want)
    assert {"10.9.0.1", "10.9.0.2", "2001:db8:9::1", "127.0.0.1", "::1"} <= set(got)


def test_default_gateways_are_those_of_the_main_table_every_hop_included(netns):
    got = set(netinfo_in_ns("[str(n.network_address) for n in netinfo.default_gateways()]"))
    assert got == ip_gateways()
    # the plain route, both hops of the multipath one, the IPv6 hop of an
    # IPv4 route, the IPv6 default; not table 100's
    assert got == {"10.9.0.254", "10.9.0.253", "10.9.0.252", "fe80::1", "2001:db8:9::fe"}
    assert netinfo_in_ns("netinfo.default_route_interface()") == "d0"
    assert netinfo_in_ns("[netinfo.interface_exists('d0'), netinfo.interface_exists('nope0')]") == [True, False]


def test_ssh_peers_are_the_established_sessions_on_the_given_ports_only(netns):
    """Real sessions on two 'SSH' ports and one other port, IPv4 and IPv6."""
    code = """
import socket
def session(family, host, port):
    lst = socket.socket(family); lst.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lst.bind((host, port)); lst.listen(4)
    cli = socket.socket(family); cli.bind((host if family == socket.AF_INET6 else "10.9.0.2", 0))
    cli.connect((host, port)); srv, _ = lst.accept()
    return [lst, cli, srv]
keep = session(socket.AF_INET, "10.9.0.1", 2222) + session(socket.AF_INET6, "2001:db8:9::1", 22) \\
    + session(socket.AF_INET, "10.9.0.1", 8080)
keep.append(socket.create_server(("10.9.0.1", 2223)))   # a listener only
print(json.dumps(sorted(str(n) for n in netinfo.ssh_peers([22, 2222, 2223]))))
"""
    out = run(sys.executable, "-c", f"import json, sys; sys.path.insert(0, {ROOT!r}); "
                                    f"from netsentinel import netinfo\n{code}")
    assert json.loads(out) == ["10.9.0.2/32", "2001:db8:9::1/128"]
