"""Kernel tests of the connection monitor itself (kernel/monitor.py): the
ring buffer's events decoded from raw bytes, its losses counted by the
kernel, and a poll that hands back control under a flood.

Connects go to 127.0.0.1/::1 port 9 in this namespace (refused at once);
only this process's events are counted."""

from __future__ import annotations

import os
import socket
import threading

import pytest

from netlab import kernel_test_skip_reason, wait_until

from netsentinel.kernel import monitor as mon
from netsentinel.loader.procinfo import start_ticks, stat_fields

SKIP = kernel_test_skip_reason()
pytestmark = pytest.mark.skipif(SKIP is not None, reason=str(SKIP))
PORT = 9


def connect(addr: str, n: int = 1) -> None:
    fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
    for _ in range(n):
        s = socket.socket(fam, socket.SOCK_STREAM)
        s.setblocking(False)
        s.connect_ex((addr, PORT))
        s.close()


@pytest.fixture(params=["raw", "bcc"])
def reader(request):
    """The ring buffer read in place (kernel/ringread.py), or through BCC's
    per-record callback (where the raw reader may not be used)."""
    return request.param


@pytest.fixture
def started(request, reader):
    m = mon.ConnectionMonitor("tracepoint", page_cnt=request.param, raw_ring=reader == "raw")
    got, lost = [], []
    me = os.getpid()
    m.start(lambda e: got.append(e) if e.pid == me and e.dport == PORT else None, lost.append)
    assert (m._reader is not None) == (reader == "raw"), m.ring_reader_off_reason
    yield m, got, lost
    m.stop()


@pytest.mark.parametrize("started", [8], indirect=True)
def test_events_decoded_from_the_ring_buffer(started):
    m, got, _ = started
    assert m.ring, "kernel >= 5.8: the ring buffer is used"
    connect("127.0.0.1")
    connect("::ffff:127.0.0.1")
    connect("::1")
    wait_until(lambda: m.poll(50) or len(got) >= 3, 10, what="three connection events")
    seen = [(e.family, e.daddr, e.comm, e.mode) for e in got]
    comm = open("/proc/self/comm").read().strip()
    assert seen == [("ipv4", "127.0.0.1", comm, "tracepoint"),
                    ("ipv4", "127.0.0.1", comm, "tracepoint"),   # v4-mapped is reported as IPv4
                    ("ipv6", "::1", comm, "tracepoint")], seen
    assert all(e.tid == os.getpid() and e.uid == 0 and e.ts_ns > 0 for e in got)


@pytest.mark.parametrize("started", [8], indirect=True)
def test_events_carry_the_process_start_proc_shows(started):
    """The process's start (its group leader's, for a thread's connect too),
    exactly the clock tick /proc/PID/stat gives: with the pid it names the
    process (loader/procinfo.py)."""
    m, got, _ = started
    assert m.starts.offsets(), m.starts.off_reason
    connect("127.0.0.1")
    t = threading.Thread(target=connect, args=("127.0.0.1",))
    t.start()
    t.join()
    wait_until(lambda: m.poll(50) or len(got) >= 2, 10, what="two connection events")
    ticks = int(stat_fields(os.getpid())[19])
    assert [start_ticks(e.start_ns) for e in got] == [ticks, ticks]
    assert got[0].tid != got[1].tid


@pytest.mark.parametrize("started", [8], indirect=True)
def test_a_known_process_is_told_to_the_kernel_and_its_connects_still_arrive(started):
    """know(): the kernel puts this process's connects in without a wake-up;
    the next poll reads them all the same."""
    m, got, _ = started
    connect("127.0.0.1")
    wait_until(lambda: m.poll(50) or got, 10, what="a connection event")
    m.know(os.getpid(), got[0].start_ns)
    assert m.starts.told(os.getpid()) == got[0].start_ns
    connect("127.0.0.1", 5)
    wait_until(lambda: m.poll(50) or len(got) >= 6, 10, what="five quiet connection events")
    assert len(got) == 6 and m.kernel_lost() == 0


def test_without_the_start_offsets_the_monitor_runs_and_says_why_once(monkeypatch):
    """A kernel whose BTF lacks a member: one warning line, events with
    start 0 (pid reuse judged by time windows), every connect wakes the poll."""
    from netsentinel.kernel import connknown
    monkeypatch.setattr(connknown, "CONN_OFFSETS", {"NS_OFF_TASK_GROUP_LEADER": ("task_struct", "no_such_member"),
                                                    "NS_OFF_TASK_START_BOOTTIME": ("task_struct", "start_boottime")})
    warned, got = [], []
    m = mon.ConnectionMonitor("tracepoint", page_cnt=8, warn=warned.append)
    m.start(lambda e: got.append(e) if e.pid == os.getpid() and e.dport == PORT else None, lambda n: None)
    try:
        connect("127.0.0.1")
        wait_until(lambda: m.poll(50) or got, 10, what="a connection event")
        m.know(os.getpid(), 12345)
        assert got[0].start_ns == 0 and m.starts.told(os.getpid()) is None
        assert len(warned) == 1 and "no_such_member" in warned[0] and "\n" not in warned[0], warned
    finally:
        m.stop()


@pytest.mark.parametrize("started", [1], indirect=True)
def test_a_full_ring_folds_identical_connects_and_loses_none(started):
    """3,000 connects to one port with nobody reading a ring of a page per
    CPU (~90 records a page): the kernel folds those that find it full into
    one entry per (process, destination, port); every connect is accounted
    for in the counts of the events handed on, none lost."""
    m, got, _ = started
    made = 3000
    connect("127.0.0.1", made)
    wait_until(lambda: m.poll(20) or (sum(e.count for e in got) >= made and not m.poll(0)), 20,
               what="every connect accounted for")
    assert sum(e.count for e in got) == made, [e.count for e in got if e.count > 1]
    folded = [e for e in got if e.count > 1]
    assert folded and all(e.last_ns >= e.ts_ns and e.dport == PORT for e in folded)
    assert len(got) < made / 2   # the flood took a few events, not 3,000


def test_losses_are_counted_in_the_kernel_and_reported():
    """More distinct (destination port) connects than the fold map holds,
    with nobody reading: the ones with no room anywhere are counted by the
    kernel and reported; every connect is received, folded or counted lost."""
    m = mon.ConnectionMonitor("tracepoint", page_cnt=1)
    got, lost, me = [], [], os.getpid()
    ports = range(20000, 20000 + mon_folds() + 3000)
    m.start(lambda e: got.append(e) if e.pid == me and e.dport in ports else None, lost.append)
    try:
        for port in ports:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setblocking(False)
            s.connect_ex(("127.0.0.1", port))
            s.close()
        wait_until(lambda: m.poll(20) or (m.kernel_lost() > 0 and not m.poll(0) and _drained(m, got)),
                   20, what="the ring drained")
        mon_lost = m.kernel_lost()
        assert mon_lost > 0, "the fold map must have run out of room"
        # Every one of ours is received, folded or counted lost (other
        # processes' losses can only add to the count).
        assert sum(e.count for e in got) + mon_lost >= len(ports), (len(got), mon_lost)
        m._lost_at = 0.0   # report now rather than within LOST_EVERY_S
        m.poll(0)
        assert sum(lost) == mon_lost == m.lost_total, (lost, mon_lost)
    finally:
        m.stop()


def mon_folds() -> int:
    from netsentinel import abi
    return abi.C["NS_MAX_CONN_FOLDS"]


def _drained(m, got) -> bool:
    before = len(got)
    m.poll(0)
    return len(got) == before


@pytest.mark.parametrize("started", [512], indirect=True)
def test_a_poll_hands_back_control_within_its_budget(started):
    m, got, _ = started
    connect("127.0.0.1", mon.POLL_BUDGET + 2000)
    m.poll(1000)
    first = len(got)
    assert 0 < first <= mon.POLL_BUDGET, first
    wait_until(lambda: m.poll(20) or len(got) >= mon.POLL_BUDGET + 2000, 20, what="the rest")
    assert m.kernel_lost() == 0


@pytest.mark.parametrize("started", [1], indirect=True)
def test_a_small_ring_read_as_it_fills_wraps_many_times_and_loses_nothing(started):
    """3,000 events through a ring of a page per CPU (~90 records a page),
    read between bursts of 20: the positions wrap around the ring dozens of
    times, every record arrives once, in order, none lost."""
    m, got, _ = started
    for _ in range(150):
        connect("127.0.0.1", 20)
        while m.poll(0) or _more(m, got):
            pass
    wait_until(lambda: m.poll(20) or len(got) >= 3000, 10, what="3,000 events")
    assert len(got) == 3000 and m.kernel_lost() == 0, (len(got), m.kernel_lost())
    stamps = [e.ts_ns for e in got]
    assert stamps == sorted(stamps) and len(set(stamps)) == 3000


def _more(m, got) -> bool:
    before = len(got)
    m.poll(0)
    return len(got) > before


@pytest.mark.parametrize("started", [1], indirect=True)
def test_a_flood_cannot_hide_another_connect(started):
    """A flood fills the ring buffer, then one connect elsewhere (the
    reverse shell a flood would cover): it still arrives, folded on its own
    (count 1), not lost."""
    m, got, _ = started
    connect("127.0.0.1", 3000)
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setblocking(False)
    s.connect_ex(("127.0.0.2", PORT))
    s.close()
    wait_until(lambda: m.poll(20) or any(e.daddr == "127.0.0.2" for e in got), 20,
               what="the one connect behind the flood")
    (other,) = [e for e in got if e.daddr == "127.0.0.2"]
    assert other.count == 1 and other.pid == os.getpid()
    assert any(e.count > 1 for e in got), "the ring was full when it connected (the flood folded)"


def test_a_fault_handling_one_event_is_said_and_the_stream_goes_on():
    """An exception from the event handler (a bug) does not end the poll
    nor lose the events after it; it is said on the warn channel."""
    warned, got, me = [], [], os.getpid()

    def on_event(e):
        if e.pid == me and e.dport == PORT:
            got.append(e)
            if len(got) == 1:
                raise RuntimeError("boom")
    m = mon.ConnectionMonitor("tracepoint", page_cnt=8, warn=warned.append)
    m.start(on_event, lambda n: None)
    try:
        connect("127.0.0.1", 5)
        wait_until(lambda: m.poll(50) or len(got) >= 5, 10, what="five events")
        assert len(got) == 5 and m.handler_errors == 1
        assert any("RuntimeError: boom" in w for w in warned), warned
    finally:
        m.stop()
