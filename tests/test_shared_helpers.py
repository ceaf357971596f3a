"""Small shared facts with one definition each: the protected-address cache
policy, TTL limits and expiry, the threat target, decided-item trimming."""

import pytest

from netsentinel import threats
from netsentinel.decisions import decide, trim_decided
from netsentinel.errors import DecisionError
from netsentinel.netinfo import PROTECTED_TTL_S, ProtectedCache
from netsentinel.timefmt import MAX_TTL_S, check_ttl, is_expired, parse_iso, utc_now_iso


def test_protected_cache_reuses_within_ttl_and_per_port_set():
    cache = ProtectedCache()
    assert cache.ttl == PROTECTED_TTL_S
    first = cache.get([22])
    assert cache.get([22]) is first                       # within the TTL: no new lookup
    other = cache.get([22, 2222])
    assert other is not first                              # other SSH ports: a fresh look
    assert any(why == "loopback" for _, why in first.entries)
    fresh = ProtectedCache(ttl=0)
    assert fresh.get([22]) is not fresh.get([22])         # no caching at ttl 0


@pytest.mark.parametrize("bad", [0, -1, True, "60", MAX_TTL_S + 1, float("nan")])
def test_ttl_limits_are_the_same_for_bans_and_rules(bad):
    with pytest.raises(ValueError, match="ttl_seconds must be a positive number"):
        check_ttl(bad)
    assert check_ttl(MAX_TTL_S) == MAX_TTL_S


def test_expiry():
    assert is_expired({"expires_at": utc_now_iso(100.0)}, 100.0)
    assert not is_expired({"expires_at": utc_now_iso(100.0)}, 99.0)
    assert not is_expired({"expires_at": None}, 1e12)
    assert not is_expired({"expires_at": "not a time"}, 1e12)  # hand-edited: never expires


@pytest.mark.parametrize("text", ["2026-12-01T00:00:00.000000Z", "2026-12-01T00:00Z", "2026-12-01Z",
                                  " 2026-12-01T00:00:00Z", "20261201T000000Z", "2026-12-01T00:00:00,5Z",
                                  "Z", "yesterdayZ", "2026-12-01T25:00:00Z", "2026-12-01T00:00:00+00:00Z"])
def test_a_z_time_reads_as_its_plus_00_00_form(text):
    """parse_iso reads the events' Z form directly (Python 3.11): the same
    time, or the same refusal, as the general path's "+00:00" rewrite."""
    def outcome(s):
        try:
            return parse_iso(s)
        except ValueError:
            return "refused"
    assert outcome(text) == outcome(text.strip()[:-1] + "+00:00")


def test_threat_target():
    assert threats.target_of({"target": "192.0.2.1", "event": {"daddr": "x"}}) == "192.0.2.1"
    assert threats.target_of({"event": {"daddr": "192.0.2.2"}}) == "192.0.2.2"
    assert threats.target_of({"event": None}) is None


def test_decide_and_trim():
    items = [{"id": str(i), "status": "rejected"} for i in range(5)] + [{"id": "p", "status": "pending"}]
    assert [t["id"] for t in trim_decided(items, 2)] == ["3", "4", "p"]
    assert decide(items, "p", "proposal", "approved", "me", None)["decided_by"] == "me"
    with pytest.raises(DecisionError, match="proposal p was already approved by me"):
        decide(items, "p", "proposal", "rejected", "you", None)
    with pytest.raises(DecisionError, match="no threat with id q"):
        decide(items, "q", "threat", "rejected", "you", None)


def test_every_deliberate_error_is_a_netsentinel_error():
    from netsentinel.addresses import AddressError
    from netsentinel.analyzer.eventcheck import BadLine
    from netsentinel.analyzer.rules import RuleFileError
    from netsentinel.analyzer.verdict import InvalidVerdict
    from netsentinel.bancheck import BanRefused
    from netsentinel.errors import ConfigError, InputError, InvalidAnswer, NetSentinelError
    from netsentinel.filterrules import RuleRefused
    from netsentinel.kernel import KernelError
    from netsentinel.llm.backends import BackendError
    from netsentinel.proposals import ProposalError
    from netsentinel.store import CorruptFile, LockTimeout, StoreError
    from netsentinel.whitelist import ConfigError as WhitelistConfigError

    family = (AddressError, BanRefused, RuleRefused, ConfigError, ProposalError, InvalidVerdict,
              InvalidAnswer, BadLine, RuleFileError, BackendError, KernelError, StoreError,
              LockTimeout, CorruptFile, DecisionError, InputError)
    assert all(issubclass(e, NetSentinelError) for e in family)
    assert WhitelistConfigError is ConfigError
    assert not issubclass(DecisionError, StoreError)  # a decision is not a storage failure
    assert not hasattr(threats, "ThreatError")
