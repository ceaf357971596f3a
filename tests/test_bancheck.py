"""Ban command validation (shape and host policy) and the host facts behind
it (netinfo: own addresses, SSH peers from /proc/net/tcp*)."""

from __future__ import annotations

import json
import socket
import subprocess

import pytest

from netsentinel import netinfo
from netsentinel.addresses import parse_target
from netsentinel.bancheck import BanRefused, check_policy, parse_command, validate
from netsentinel.netinfo import Protected
from netsentinel.whitelist import Whitelist

WHITELIST = Whitelist({"trusted_ips": ["198.51.100.0/24", "2001:db8:aaaa::/48", "203.0.113.50"]})
PROTECTED = Protected([
    (parse_target("192.0.2.2"), "an address of this machine"),
    (parse_target("127.0.0.0/8"), "loopback"),
    (parse_target("192.0.2.1"), "the default gateway"),
    (parse_target("2001:db8:ffff::7"), "the peer of a live SSH session (owner lock-out protection)"),
])


def refused(raw, whitelist=WHITELIST, protected=PROTECTED) -> str:
    with pytest.raises(BanRefused) as exc:
        validate(raw, whitelist, protected)
    msg = str(exc.value)
    assert msg and "\n" not in msg
    return msg


# ----------------------------------------------------------------------- shapes

@pytest.mark.parametrize("raw, words", [
    (["ban", "1.2.3.4"], "must be a JSON object, got list"),
    ("ban 1.2.3.4", "must be a JSON object, got str"),
    (None, "must be a JSON object, got NoneType"),
    ({"action": "block", "ip": "1.2.3.4"}, "unknown action 'block'"),
    ({"ip": "1.2.3.4"}, "unknown action None"),
    ({"action": "ban"}, "missing 'ip'"),
    ({"action": "ban", "ip": "1.2.3.999"}, "is not a valid IP address or CIDR"),
    ({"action": "ban", "ip": "10.1.2.3/16"}, "did you mean 10.1.0.0/16?"),
    ({"action": "ban", "ip": 16909060}, "expected an IP address or CIDR string"),
    ({"action": "ban", "ip": "1.2.3.4", "ttl_seconds": 0}, "ttl_seconds must be a positive"),
    ({"action": "ban", "ip": "1.2.3.4", "ttl_seconds": -5}, "ttl_seconds must be a positive"),
    ({"action": "ban", "ip": "1.2.3.4", "ttl_seconds": "60"}, "ttl_seconds must be a positive"),
    ({"action": "ban", "ip": "1.2.3.4", "ttl_seconds": True}, "ttl_seconds must be a positive"),
    ({"action": "ban", "ip": "1.2.3.4", "ttl_seconds": 10 ** 12}, "ttl_seconds must be a positive"),
])
def test_bad_shapes(raw, words):
    assert words in refused(raw)


def test_valid_commands_parse_to_canonical_targets():
    cmd = validate({"action": "ban", "ip": "203.0.113.7", "reason": "Malicious scan",
                    "ttl_seconds": 3600.9}, WHITELIST, PROTECTED)
    assert (cmd.action, cmd.key, cmd.reason, cmd.source, cmd.ttl_seconds) == \
        ("ban", "203.0.113.7", "Malicious scan", "manual", 3600)
    cmd = validate({"action": "ban", "ip": "10.9.0.0/16", "source": "auto"}, WHITELIST, PROTECTED)
    assert (cmd.key, cmd.source, cmd.ttl_seconds) == ("10.9.0.0/16", "auto", None)
    cmd = validate({"action": "ban", "ip": "2001:DB8:1::/48"}, WHITELIST, PROTECTED)
    assert cmd.key == "2001:db8:1::/48" and cmd.net.version == 6
    cmd = validate({"action": "ban", "ip": "::ffff:203.0.113.8", "reason": 42}, WHITELIST, PROTECTED)
    assert cmd.key == "203.0.113.8" and cmd.net.version == 4 and cmd.reason == "42"


def test_unban_is_never_refused_by_policy():
    # Lifting a ban must always be possible, even for a protected or trusted address.
    for ip in ("0.0.0.0/0", "192.0.2.2", "198.51.100.0/24", "224.0.0.1"):
        assert validate({"action": "unban", "ip": ip}, WHITELIST, PROTECTED).action == "unban"


# ----------------------------------------------------------------------- policy

@pytest.mark.parametrize("ip, words", [
    ("0.0.0.0/0", "0.0.0.0/0 is too broad: ipv4 bans need a prefix of /8 or longer"),
    ("::/0", "::/0 is too broad: ipv6 bans need a prefix of /32 or longer"),
    ("12.0.0.0/7", "is too broad"),
    ("2001:d00::/24", "is too broad"),
    ("0.0.0.0", "0.0.0.0 is the unspecified address"),
    ("::", ":: is the unspecified address"),
    ("224.0.0.1", "multicast"),
    ("239.1.0.0/16", "multicast"),
    ("ff02::1", "multicast"),
])
def test_over_broad_unspecified_multicast(ip, words):
    assert words in refused({"action": "ban", "ip": ip})


def test_min_ban_prefix_comes_from_the_whitelist_config():
    strict = Whitelist({"min_ban_prefix": {"ipv4": 24, "ipv6": 64}})
    assert "/24 or longer" in refused({"action": "ban", "ip": "10.1.0.0/16"}, whitelist=strict)
    assert validate({"action": "ban", "ip": "10.1.1.0/24"}, strict, PROTECTED).key == "10.1.1.0/24"


@pytest.mark.parametrize("ip, trusted", [
    ("198.51.100.7", "198.51.100.0/24"),       # inside a trusted network
    ("198.51.0.0/16", "198.51.100.0/24"),      # containing one
    ("203.0.113.50", "203.0.113.50"),
    ("203.0.113.0/24", "203.0.113.50"),
    ("2001:db8:aaaa:1::1", "2001:db8:aaaa::/48"),
])
def test_whitelisted_overlap_is_refused(ip, trusted):
    assert f"overlaps whitelisted {trusted}" in refused({"action": "ban", "ip": ip})


@pytest.mark.parametrize("ip, covered, why", [
    ("192.0.2.2", "192.0.2.2", "an address of this machine"),
    ("192.0.2.0/24", "192.0.2.2", "an address of this machine"),
    ("127.0.0.53", "127.0.0.0/8", "loopback"),
    ("2001:db8:ffff::/48", "2001:db8:ffff::7", "the peer of a live SSH session"),
])
def test_protected_overlap_is_refused(ip, covered, why):
    msg = refused({"action": "ban", "ip": ip})
    assert f"covers {covered}, {why}" in msg


def test_check_policy_on_parsed_command_and_families_do_not_mix():
    # 192.0.2.2 is protected in IPv4; an IPv6 network never "covers" it.
    check_policy(parse_command({"action": "ban", "ip": "2001:db8:1::/48"}), WHITELIST, PROTECTED)
    check_policy(parse_command({"action": "ban", "ip": "192.0.3.0/24"}), WHITELIST, PROTECTED)
    assert validate({"action": "ban", "ip": "192.0.3.0/24"}, Whitelist(), Protected()).key == \
        "192.0.3.0/24"


# ---------------------------------------------------------------------- netinfo

def _established(family: int, host: str):
    """A real ESTABLISHED loopback TCP session: (listener, client, server side, port)."""
    lst = socket.socket(family, socket.SOCK_STREAM)
    lst.bind((host, 0))
    lst.listen(1)
    port = lst.getsockname()[1]
    cli = socket.create_connection((host, port), timeout=5)
    srv, _ = lst.accept()
    return [lst, cli, srv], port


@pytest.mark.parametrize("family, host, peer", [
    (socket.AF_INET, "127.0.0.1", "127.0.0.1"),
    (socket.AF_INET6, "::1", "::1"),
])
def test_ssh_peers_finds_live_sessions_on_the_given_port(family, host, peer):
    if family == socket.AF_INET6 and not socket.has_ipv6:
        pytest.skip("this Python has no IPv6 support")
    try:
        socks, port = _established(family, host)
    except OSError as e:
        pytest.skip(f"cannot open a loopback session on {host}: {e.strerror}")
    try:
        peers = netinfo.ssh_peers([port])
        assert parse_target(peer) in peers
        # Only the session's remote end, and only for ESTABLISHED sessions on that port.
        assert set(peers) == {parse_target(peer)}
    finally:
        for s in socks:
            s.close()


def test_an_ipv4_peer_of_a_dual_stack_listener_is_protected_as_ipv4():
    """sshd listening on [::] only takes IPv4 clients as ::ffff:a.b.c.d: the
    peer is protected under the IPv4 address a ban would name."""
    lst = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    lst.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    lst.bind(("::", 0))
    lst.listen(1)
    port = lst.getsockname()[1]
    cli = socket.create_connection(("127.0.0.1", port), timeout=5)
    srv, _ = lst.accept()
    try:
        assert netinfo.ssh_peers([port]) == [parse_target("127.0.0.1")]
        with pytest.raises(BanRefused, match="SSH session"):
            validate({"action": "ban", "ip": "127.0.0.0/8"}, Whitelist(),
                     Protected([(p, "the peer of a live SSH session") for p in netinfo.ssh_peers([port])]))
    finally:
        for s in (srv, cli, lst):
            s.close()


def test_ssh_peers_ignores_listeners():
    lst = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    lst.bind(("127.0.0.1", 0))
    lst.listen(1)
    try:
        assert netinfo.ssh_peers([lst.getsockname()[1]]) == []
    finally:
        lst.close()


def _ip_addr_locals() -> set[str]:
    out = subprocess.run(["ip", "-j", "addr", "show"], capture_output=True, text=True,
                         check=True).stdout
    return {a["local"] for link in json.loads(out) for a in link.get("addr_info", [])
            if "local" in a}


def protected_and_stable_locals():
    """protected_addresses() and the addresses `ip -j addr` showed both
    before and after it (other tests may add or remove interfaces meanwhile)."""
    before = _ip_addr_locals()
    prot = netinfo.protected_addresses()
    return prot, before & _ip_addr_locals()


def test_protected_addresses_cover_loopback_and_this_hosts_addresses():
    prot, stable = protected_and_stable_locals()
    assert "127.0.0.1" in stable
    for ip in ("127.0.0.1", "127.1.2.3", "::1"):
        assert prot.covering(parse_target(ip)) is not None, ip
    for ip in stable:
        assert prot.covering(parse_target(ip)) is not None, f"{ip} (from ip -j addr) is not protected"
    reasons = {why for _, why in prot.entries}
    assert {"an address of this machine", "loopback"} <= reasons


def test_protected_addresses_refuse_banning_this_host():
    prot, stable = protected_and_stable_locals()
    for ip in stable:
        with pytest.raises(BanRefused, match="covers"):
            validate({"action": "ban", "ip": ip}, Whitelist(), prot)


def test_resolvers_metadata_and_broadcast_are_never_banned(tmp_path, monkeypatch):
    """A ban covering the host's DNS resolver, the cloud metadata address or
    the broadcast address is refused, each with its reason."""
    conf = tmp_path / "resolv.conf"
    conf.write_text("# comment\nnameserver 192.0.2.53\nnameserver fe80::1%eth0\nsearch lan\n")
    monkeypatch.setattr(netinfo, "RESOLV_CONFS", (str(conf),))
    assert [str(n) for n in netinfo.resolvers((str(conf),))] == ["192.0.2.53/32", "fe80::1/128"]
    prot = netinfo.protected_addresses()
    wl = Whitelist()
    for ip, why in (("192.0.2.0/24", "a DNS resolver this host uses"),
                    ("169.254.169.254", "the cloud instance-metadata address"),
                    ("169.254.0.0/16", "the cloud instance-metadata address"),
                    ("255.255.255.255", "the broadcast address")):
        with pytest.raises(BanRefused, match=why):
            validate({"action": "ban", "ip": ip}, wl, prot)
    validate({"action": "ban", "ip": "198.51.100.7"}, wl, prot)  # an ordinary address still goes
