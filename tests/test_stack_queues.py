"""Full receive queues per socket in the loader (netsentinel/loader/fullqueues.py),
without a kernel: the owner of a real socket found by its inode, rows of
one socket summed, the owner looked up once (and again later if it was not
found), the per-socket totals bounded. The kernel side is tested in
tests/test_kernel_stack_path.py with a UDP socket that does not read."""

from __future__ import annotations

import os
import socket

from netsentinel.loader import fullqueues
from netsentinel.loader.fullqueues import FullQueues, socket_owners


def row(inode: int, drops: int, port: int = 5000, **kw) -> dict:
    return {"sk": inode * 64, "inode": inode, "uid": 0, "drops": drops, "rmem_alloc": 2304, "rcvbuf": 2304,
            "truesize": 2304, "reason": "SOCKET_RCVBUFF", "netns": 1, "family": "ipv4", "proto": 17,
            "local": "10.0.0.1", "port": port, "src": "10.0.0.2", "sport": 40000, "first_ns": 1, "last_ns": 2} | kw


def test_the_owner_of_a_real_socket_is_found_by_its_inode():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        ino = os.fstat(s.fileno()).st_ino
        assert socket_owners({ino}) == {ino: os.getpid()}
    finally:
        s.close()
    assert socket_owners({ino}) == {}            # closed: nobody holds it


def test_rows_of_one_socket_add_up_and_the_owner_is_looked_up_once():
    asked: list[set[int]] = []
    now = [0.0]
    batches = [[row(7, 3), row(7, 2, src="10.0.0.3"), row(8, 1, port=5001)], [row(7, 4)], [row(8, 1, port=5001)]]

    def owners(inodes):
        asked.append(set(inodes))
        return {7: os.getpid()}
    q = FullQueues(lambda: batches.pop(0), lambda pid: {"exe": "/usr/bin/x"}, owners=owners, clock=lambda: now[0])
    first = q.sample("t1")
    assert [(r["inode"], r["drops"], r["pid"]) for r in first] == [(7, 5, os.getpid()), (8, 1, None)]
    assert first[0]["exe"] == "/usr/bin/x" and first[0]["comm"] and first[0]["last_src"] == "10.0.0.3"
    assert q.sample("t2")[0]["drops"] == 4
    assert asked == [{7, 8}]                       # socket 7's owner is known; 8's is not retried yet
    now[0] = fullqueues.RETRY_S
    q.sample("t3")
    assert asked == [{7, 8}, {8}]
    snap = q.snapshot()
    assert [(r["inode"], r["drops"], r["last_seen"]) for r in snap] == [(7, 9, "t2"), (8, 2, "t3")]
    assert q.totals["full_queue_drops"] == 11


def test_the_per_socket_totals_are_bounded_biggest_first(monkeypatch):
    monkeypatch.setattr(fullqueues, "MAX_SOCKETS", 2)
    batches = [[row(i, i, port=6000 + i) for i in range(1, 6)]]
    q = FullQueues(lambda: batches.pop(0), lambda pid: {}, owners=lambda inodes: {})
    q.sample("t")
    assert [r["inode"] for r in q.snapshot()] == [5, 4]
    assert len(q.sockets) == 2
