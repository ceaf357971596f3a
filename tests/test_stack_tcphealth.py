"""TCP health reports under connection churn (netsentinel/loader/tcphealth.py),
without a kernel: the loader's own namespace's connections go first, a
final report with no room this interval comes in the next ones instead of
being lost, and only updates (or a backlog past its bound) are omitted."""

from __future__ import annotations

from netsentinel.loader import tcphealth
from netsentinel.loader.tcphealth import TcpHealth

OWN, OTHER = 111, 222


def conn(key: int, netns: int, closed: bool, last_ns: int = 5, retransmits: int = 0, first_ns: int = 1) -> dict:
    return {"key": (key, 1), "family": "ipv4", "saddr": "10.0.0.1", "sport": key % 65536, "daddr": "10.0.0.2",
            "dport": 80, "state": "CLOSE" if closed else "ESTABLISHED", "closed": closed, "inbound": False,
            "pid": None, "uid": None, "comm": None, "srtt_us": 100, "cwnd": 10, "ssthresh": 0x7FFFFFFF,
            "segments_in": 1, "retransmits": retransmits, "rst_sent": 0, "rst_recv": 0, "queue_drops": 0,
            "netns": netns, "state_changes": 1, "states": [("CLOSE", 1)], "first_ns": first_ns, "last_ns": last_ns}


def test_own_namespace_first_and_finals_carried_over_not_lost(monkeypatch):
    monkeypatch.setattr(tcphealth, "MAX_PER_INTERVAL", 10)
    # Churn in another namespace: 25 connections closed in one interval, with
    # more retransmits than ours; then one of ours closes, and one is live.
    batches = [[conn(i, OTHER, True, retransmits=9) for i in range(25)] + [conn(100, OWN, True), conn(101, OWN, False)],
               [], [], []]
    t = TcpHealth(lambda: batches.pop(0), lambda pid: {}, netns=OWN)
    first = t.sample()
    assert len(first) == 10 and [(e["sport"], e["final"]) for e in first[:2]] == [(100, True), (101, False)]
    assert all(e["netns"] == OTHER and e["final"] for e in first[2:])
    later = t.sample() + t.sample()
    # The 17 other finals come in the next intervals, each once; nothing omitted.
    assert sorted(e["sport"] for e in first[2:] + later) == list(range(25))
    assert t.sample() == [] and t.totals == {"tcp_reported": 27, "tcp_omitted": 0}


def test_updates_beyond_the_bound_are_omitted_and_the_backlog_is_bounded(monkeypatch):
    monkeypatch.setattr(tcphealth, "MAX_PER_INTERVAL", 2)
    monkeypatch.setattr(tcphealth, "MAX_PENDING_FINALS", 3)
    batches = [[conn(i, OTHER, False) for i in range(4)] + [conn(10 + i, OTHER, True, retransmits=i)
                                                            for i in range(6)]]
    t = TcpHealth(lambda: batches.pop(0), lambda pid: {}, netns=OWN)
    assert [(e["final"], e["sport"]) for e in t.sample()] == [(True, 15), (True, 14)]
    # 4 live updates with no room (omitted), 4 finals waiting with room for 3:
    # the least telling (fewest retransmits) is the one omitted.
    assert t.totals["tcp_omitted"] == 5 and sorted(k[0] for k in t._pending) == [11, 12, 13]


def test_a_connect_floods_empty_sockets_come_after_a_connection_that_carried_data(monkeypatch):
    """Another namespace's connect flood: sockets that never got a segment
    (SYN_SENT, then closed) with SYN retransmits; a real connection of that
    namespace, closed in the same interval, is reported first."""
    monkeypatch.setattr(tcphealth, "MAX_PER_INTERVAL", 5)
    flood = [conn(i, OTHER, True, retransmits=3) | {"segments_in": 0} for i in range(50)]
    batches = [flood + [conn(500, OTHER, True)]]
    t = TcpHealth(lambda: batches.pop(0), lambda pid: {}, netns=OWN)
    assert t.sample()[0]["sport"] == 500


def test_a_flood_of_short_connections_does_not_bury_a_long_one(monkeypatch):
    """Another namespace's accept-and-close flood: connections that carried a
    segment and lived microseconds; one that lasted seconds, closed in the
    same interval, is reported first, and a backlog keeps it first."""
    monkeypatch.setattr(tcphealth, "MAX_PER_INTERVAL", 5)
    flood = [conn(i, OTHER, True, first_ns=10_000, last_ns=10_050) for i in range(50)]
    batches = [flood[:25], flood[25:] + [conn(500, OTHER, True, first_ns=1, last_ns=2_000_000_000)]]
    t = TcpHealth(lambda: batches.pop(0), lambda pid: {}, netns=OWN)
    t.sample()
    assert t.sample()[0]["sport"] == 500
