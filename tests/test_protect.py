"""loader/protect.py: the protected set every ban is checked against is
refreshed by a thread of its own, so a ban does not wait for `ip -j` and
/proc/net/tcp; a set older than its TTL is never used. Real lookups."""

from __future__ import annotations

from netsentinel.addresses import parse_target
from netsentinel.loader.protect import ProtectedFeed
from netsentinel.testing.lab import wait_until


def test_the_thread_refreshes_the_set_and_a_ban_uses_it_without_looking():
    warned = []
    feed = ProtectedFeed(lambda: (22,), warned.append, ttl=60.0, every=0.05)
    assert feed._current is None
    feed.start()
    try:
        first = wait_until(lambda: feed._current, 10, 0.01, "the first refresh")
        later = wait_until(lambda: feed._current is not first and feed._current, 10, 0.01,
                           "a second refresh")
        got = feed.get()
        assert got is later[2] or got is feed._current[2]   # the thread's set, not a new look
        assert got.covering(parse_target("127.0.0.1")) is not None
    finally:
        feed.stop()
    assert warned == []


def test_a_set_older_than_the_ttl_is_looked_up_again_by_the_ban_itself():
    feed = ProtectedFeed(lambda: (22,), print, ttl=0.0, every=3600)   # the thread never runs
    a, b = feed.get(), feed.get()
    assert a is not b   # each ban looked itself: never a stale set


def test_changed_ssh_ports_are_looked_up_at_once():
    ports = [(22,)]
    feed = ProtectedFeed(lambda: ports[0], print, ttl=3600, every=3600)
    a = feed.get()
    assert feed.get() is a
    ports[0] = (2222,)
    b = feed.get()
    assert b is not a and feed._current[0] == (2222,)
