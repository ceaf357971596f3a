"""Ban targets: parsing, canonical forms and the refusals people will meet."""

from __future__ import annotations

import ipaddress

import pytest

from netsentinel.addresses import (AddressError, canonical, family_name, overlaps_any,
                                   parse_target)


@pytest.mark.parametrize("text, expected, family", [
    ("1.2.3.4", "1.2.3.4", "ipv4"),
    (" 1.2.3.4\n", "1.2.3.4", "ipv4"),
    ("1.2.3.4/32", "1.2.3.4", "ipv4"),
    ("10.0.0.0/8", "10.0.0.0/8", "ipv4"),
    ("192.168.10.0/24", "192.168.10.0/24", "ipv4"),
    ("2001:db8::1", "2001:db8::1", "ipv6"),
    ("2001:DB8:0:0::1", "2001:db8::1", "ipv6"),
    ("2001:db8::1/128", "2001:db8::1", "ipv6"),
    ("2001:db8::/32", "2001:db8::/32", "ipv6"),
    ("fe80::1", "fe80::1", "ipv6"),
    # IPv4-mapped IPv6 is IPv4: a ban on it must land in the IPv4 table.
    ("::ffff:1.2.3.4", "1.2.3.4", "ipv4"),
    ("::ffff:10.0.0.0/104", "10.0.0.0/8", "ipv4"),
])
def test_canonical_forms(text, expected, family):
    net = parse_target(text)
    assert canonical(net) == expected
    assert family_name(net) == family
    assert parse_target(canonical(net)) == net  # canonical is a fixed point


def test_host_bits_set_suggests_the_network():
    with pytest.raises(AddressError) as exc:
        parse_target("10.1.2.3/8")
    assert str(exc.value) == "'10.1.2.3/8' has host bits set; did you mean 10.0.0.0/8?"
    with pytest.raises(AddressError, match=r"did you mean 2001:db8::/32\?"):
        parse_target("2001:db8::1/32")


@pytest.mark.parametrize("garbage", [
    "", "   ", "not-an-ip", "1.2.3", "1.2.3.4.5", "256.1.1.1", "1.2.3.4/33", "1.2.3.4/-1",
    "2001:db8:::1", "2001:db8::/129", "1.2.3.4/abc", "example.com",
])
def test_garbage_is_refused_in_one_line(garbage):
    with pytest.raises(AddressError) as exc:
        parse_target(garbage)
    assert "\n" not in str(exc.value)


@pytest.mark.parametrize("wrong_type", [None, 1234, 3.5, ["1.2.3.4"], {"ip": "1.2.3.4"}, b"1.2.3.4"])
def test_non_strings_are_refused(wrong_type):
    with pytest.raises(AddressError, match="expected an IP address or CIDR string"):
        parse_target(wrong_type)


def test_scoped_ipv6_is_refused():
    with pytest.raises(AddressError, match="scoped IPv6"):
        parse_target("fe80::1%eth0")


def test_address_error_is_a_value_error():
    assert issubclass(AddressError, ValueError)


def test_overlaps_any_is_family_aware():
    others = [parse_target("10.0.0.0/8"), parse_target("2001:db8::/32")]
    assert overlaps_any(parse_target("10.1.2.3"), others) == ipaddress.ip_network("10.0.0.0/8")
    assert overlaps_any(parse_target("0.0.0.0/1"), others) == ipaddress.ip_network("10.0.0.0/8")
    assert overlaps_any(parse_target("2001:db8:1::/48"), others) == others[1]
    assert overlaps_any(parse_target("11.0.0.1"), others) is None
    assert overlaps_any(parse_target("::ffff:10.0.0.1"), others) == others[0]
