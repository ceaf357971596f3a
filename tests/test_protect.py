"""loader/protect.py: the protected set every ban is checked against is
refreshed by a thread of its own (netinfo.ProtectedCache.refresh), so a ban
does not wait for `ip -j` and /proc/net/tcp; a set older than its TTL is
never used. Real lookups."""

from __future__ import annotations

from netsentinel.addresses import parse_target
from netsentinel.loader.protect import ProtectedFeed
from netsentinel.netinfo import ProtectedCache
from netsentinel.testing.lab import wait_until


def test_the_thread_refreshes_the_set_and_a_ban_uses_it_without_looking():
    warned = []
    cache = ProtectedCache(ttl=60.0)
    feed = ProtectedFeed(cache, lambda: (22,), warned.append, every=0.05)
    assert cache._value is None
    feed.start()
    try:
        first = wait_until(lambda: cache._value, 10, 0.01, "the first refresh")
        later = wait_until(lambda: cache._value is not first and cache._value, 10, 0.01,
                           "a second refresh")
        got = cache.get((22,))
        assert got is later or got is cache._value   # the thread's set, not a new look
        assert got.covering(parse_target("127.0.0.1")) is not None
    finally:
        feed.stop()
    assert warned == []


def test_a_set_older_than_the_ttl_is_looked_up_again_by_the_ban_itself():
    cache = ProtectedCache(ttl=0.0)   # no thread refreshes it
    a, b = cache.get((22,)), cache.get((22,))
    assert a is not b   # each ban looked itself: never a stale set


def test_changed_ssh_ports_are_looked_up_at_once():
    cache = ProtectedCache(ttl=3600)
    a = cache.get((22,))
    assert cache.get((22,)) is a
    b = cache.get((2222,))
    assert b is not a and cache._key == (2222,)
