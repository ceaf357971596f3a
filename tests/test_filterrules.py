"""Filter-rule validation: every field checked, hostile input refused with a
reason, and the owner-lockout guard."""

import pytest

from netsentinel.addresses import parse_target
from netsentinel.filterrules import MAX_RULES, RuleRefused, parse_rule, validate_rules
from netsentinel.netinfo import Protected

PROTECTED = Protected([(parse_target("192.0.2.2"), "an address of this machine"),
                       (parse_target("192.0.2.1"), "the default gateway"),
                       (parse_target("198.51.100.7"), "the peer of a live SSH session")])

GOOD = [
    ({"id": "ssdp", "action": "drop", "proto": "udp", "sport": 1900},
     {"id": "ssdp", "action": "drop", "src": "any", "proto": "udp", "sport": 1900}),
    ({"action": "count", "src": "203.0.113.0/24", "proto": "tcp", "tcp_flags": "syn,!ack",
      "dport": "1-1024"},
     {"action": "count", "src": "203.0.113.0/24", "proto": "tcp", "dport": "1-1024",
      "tcp_flags": "SYN,!ACK"}),
    ({"action": "drop", "proto": "icmp", "icmp_type": 8, "src": "203.0.113.9"},
     {"action": "drop", "src": "203.0.113.9", "proto": "icmp", "icmp_type": 8}),
    ({"action": "drop", "src": "2001:db8::/32", "proto": "icmpv6", "icmp_type": 128},
     {"action": "drop", "src": "2001:db8::/32", "proto": "icmpv6", "icmp_type": 128}),
    ({"action": "drop", "src": "203.0.113.66"}, {"action": "drop", "src": "203.0.113.66", "proto": "any"}),
    # A rate limit on TCP caps new connections only, unless told otherwise.
    ({"id": "agg-syn-80", "action": "ratelimit", "proto": "tcp", "dport": 80, "rate_pps": 1000},
     {"id": "agg-syn-80", "action": "ratelimit", "src": "any", "proto": "tcp", "dport": 80,
      "tcp_flags": "SYN,!ACK", "rate_pps": 1000, "burst": 1000}),
    ({"action": "ratelimit", "proto": "icmp", "rate_pps": 50, "burst": 5},
     {"action": "ratelimit", "src": "any", "proto": "icmp", "rate_pps": 50, "burst": 5}),
]


@pytest.mark.parametrize("raw,expected", GOOD)
def test_valid_rules_round_trip(raw, expected):
    rule = validate_rules([raw], PROTECTED)[0]
    out = rule.to_json()
    assert {k: v for k, v in out.items() if k != "id" or "id" in expected} == expected
    assert validate_rules([out], PROTECTED)[0].to_json() == out   # stable


BAD = [
    ("not a dict", "must be a JSON object"),
    ({"action": "drop", "proto": "udp", "dport": 22, "evil": 1}, "unknown rule field"),
    ({"action": "ACCEPT"}, "action must be"),
    ({"action": "drop", "id": "../../etc/passwd", "proto": "udp"}, "rule id"),
    ({"action": "drop", "id": "x" * 49, "proto": "udp"}, "rule id"),
    ({"action": "drop", "src": "10.0.0.1/8"}, "host bits"),
    ({"action": "drop", "src": "999.1.1.1"}, "not a valid IP"),
    ({"action": "drop", "proto": "sctp"}, "proto must be"),
    ({"action": "drop", "proto": "udp", "dport": 65536}, "0-65535"),
    ({"action": "drop", "proto": "udp", "dport": -1}, "0-65535"),
    ({"action": "drop", "proto": "udp", "dport": "2000-1000"}, "0-65535"),
    ({"action": "drop", "proto": "udp", "dport": "80; DROP TABLE"}, "port or a range"),
    ({"action": "drop", "proto": "udp", "dport": True}, "port or a range"),
    ({"action": "drop", "dport": 80}, "ports need proto"),
    ({"action": "drop", "proto": "udp", "tcp_flags": "SYN"}, "tcp_flags need proto"),
    ({"action": "drop", "proto": "tcp", "tcp_flags": "SYN,XMAS"}, "unknown TCP flag"),
    ({"action": "drop", "proto": "tcp", "tcp_flags": "SYN,!SYN"}, "given twice"),
    ({"action": "drop", "proto": "tcp", "icmp_type": 8}, "icmp_type needs proto"),
    ({"action": "drop", "proto": "icmp", "icmp_type": 256}, "0-255"),
    ({"action": "drop", "proto": "icmp", "src": "2001:db8::1"}, "does not fit"),
    ({"action": "ratelimit", "proto": "tcp", "dport": 80}, "rate_pps must be"),
    ({"action": "ratelimit", "proto": "tcp", "rate_pps": 0}, "rate_pps must be"),
    ({"action": "ratelimit", "proto": "tcp", "rate_pps": 10**8}, "rate_pps must be"),
    ({"action": "ratelimit", "proto": "tcp", "rate_pps": 1.5}, "rate_pps must be"),
    ({"action": "ratelimit", "proto": "udp", "rate_pps": 10, "burst": True}, "burst must be"),
    ({"action": "ratelimit", "rate_pps": 10}, "needs proto"),
    ({"action": "drop", "proto": "udp", "rate_pps": 10}, "belong to action 'ratelimit'"),
]


@pytest.mark.parametrize("raw,words", BAD)
def test_hostile_rules_are_refused_with_a_reason(raw, words):
    with pytest.raises(RuleRefused, match=words.replace("(", r"\(")):
        parse_rule(raw)


LOCKOUT = [
    ({"action": "drop"}, "would drop all inbound traffic"),
    ({"action": "drop", "src": "192.0.2.0/24"}, "the default gateway|this machine"),
    ({"action": "drop", "src": "198.51.100.7"}, "SSH session"),
    ({"action": "drop", "proto": "tcp", "dport": 22}, "could drop SSH"),
    ({"action": "drop", "proto": "tcp", "dport": "1-1024", "src": "198.51.100.0/24"}, "could drop SSH"),
]


@pytest.mark.parametrize("raw,words", LOCKOUT)
def test_rules_that_would_lock_the_owner_out_are_refused(raw, words):
    with pytest.raises(RuleRefused, match=words):
        validate_rules([raw], PROTECTED)


def test_count_rules_and_narrow_drops_of_protected_sources_are_allowed():
    """Accepted as written: a count rule matches all, a drop of the gateway
    narrowed to one UDP port, a drop of SSH from a network that holds no
    live SSH peer."""
    out = [r.to_json() for r in validate_rules(
        [{"action": "count"}, {"action": "drop", "src": "192.0.2.1", "proto": "udp", "dport": 1900}],
        PROTECTED)]
    assert [{k: v for k, v in r.items() if k != "id"} for r in out] == [
        {"action": "count", "src": "any", "proto": "any"},
        {"action": "drop", "src": "192.0.2.1", "proto": "udp", "dport": 1900}]
    (ssh,) = validate_rules([{"action": "drop", "proto": "tcp", "dport": 22, "src": "203.0.113.0/24"}],
                            PROTECTED)
    assert (ssh.action, ssh.proto, ssh.dport, str(ssh.src)) == ("drop", 6, (22, 22), "203.0.113.0/24")


def test_set_level_checks():
    with pytest.raises(RuleRefused, match="duplicate rule id"):
        validate_rules([{"id": "a", "action": "count"}, {"id": "a", "action": "count"}], PROTECTED)
    with pytest.raises(RuleRefused, match=f"at most {MAX_RULES}"):
        validate_rules([{"action": "count"}] * (MAX_RULES + 1), PROTECTED)
