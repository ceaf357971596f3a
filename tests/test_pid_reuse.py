"""A pid is reused (pid_max is 32,768 on this machine): the loader never gives
a new process an earlier one's identity, neither from its /proc cache
(ProcCache: the whitelist matches on the exe it returns) nor from the
kernel's exec-path map (a forked child with a recycled pid). The reuse is
real: /proc/sys/kernel/ns_last_pid puts the next process on the pid wanted."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from netlab import kernel_test_skip_reason, wait_until
from netsentinel.loader.procinfo import EXITED, REUSED, ProcCache, stat_fields

LAST_PID = "/proc/sys/kernel/ns_last_pid"
PY_SLEEP = [sys.executable, "-c", "import time; time.sleep(60)"]
TICK_NS = 1_000_000_000 // os.sysconf("SC_CLK_TCK")

# Forks (no exec) until a child lands on argv[1]'s pid; that child opens a raw
# ICMP socket (a kernel sighting with an exec path) and exits. The parent
# opens one first itself (it was exec'd: its own path is known).
FORKER = """
import os, socket, sys
target = int(sys.argv[1])
socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP).close()
for _ in range(200):
    with open("/proc/sys/kernel/ns_last_pid", "w") as f:
        f.write(str(target - 1))
    pid = os.fork()
    if pid == 0:
        if os.getpid() == target:
            socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP).close()
            os._exit(0)
        os._exit(3)
    if os.waitpid(pid, 0)[1] == 0:
        print("forked at", target)
        sys.exit(0)
sys.exit("the pid was never free")
"""


def spawn_at(pid: int, argv: list[str]) -> subprocess.Popen:
    """A new process with this (free) pid: other work on the machine may take
    it first, so a few tries."""
    for _ in range(200):
        with open(LAST_PID, "w") as f:
            f.write(str(pid - 1))
        p = subprocess.Popen(argv)
        if p.pid == pid:
            return p
        p.kill()
        p.wait()
    pytest.fail(f"pid {pid} never came back in 200 tries")


def ended(p: subprocess.Popen) -> None:
    p.kill()
    p.wait()


def test_a_reused_pid_is_read_afresh_not_given_the_earlier_process():
    procs = ProcCache()
    a = subprocess.Popen(["/usr/bin/sleep", "60"])
    try:
        assert procs.get(a.pid)["exe"] == "/usr/bin/sleep"
    finally:
        ended(a)
    b = spawn_at(a.pid, PY_SLEEP)
    try:
        # (exec reports success to the parent a moment before the new
        # program's arguments are readable)
        wait_until(lambda: b"time.sleep" in open(f"/proc/{b.pid}/cmdline", "rb").read(), what="b's exec")
        info = procs.get(b.pid)   # within the cache's ttl of a's reading
        assert info["exe"] == os.path.realpath(sys.executable) and "time.sleep" in info["cmdline"]
        assert info["proc_error"] is None
    finally:
        ended(b)


def test_an_event_is_given_only_a_reading_of_the_process_that_made_it():
    """With the event's time: the process then is the one read if it started
    before and was read alive after; a process started after is not it."""
    procs, cold = ProcCache(), ProcCache()
    strict = ProcCache(gone_grace=0)   # a gone process's reading only for its events before it
    a = subprocess.Popen(["/usr/bin/sleep", "60"])
    try:
        wait_until(lambda: os.readlink(f"/proc/{a.pid}/exe") == "/usr/bin/sleep",
                   not_yet=(OSError,), what="sleep's exec")
        a_event = time.monotonic_ns()          # an event of a's, read below while a lives
        assert procs.get(a.pid, a_event)["exe"] == "/usr/bin/sleep"
    finally:
        ended(a)
    # The tick (start times have that resolution) passes before b starts.
    wait_until(lambda: time.monotonic_ns() > a_event + 2 * TICK_NS, what="a clock tick")
    b = spawn_at(a.pid, PY_SLEEP)
    try:
        assert procs.get(b.pid, a_event)["exe"] == "/usr/bin/sleep"      # a's reading proves it
        stale = cold.get(b.pid, a_event)                                  # nothing proves it
        assert (stale["proc_error"], stale["exe"], stale["ppid"]) == (REUSED, None, None)
        b_event = time.monotonic_ns()
        b_comm = open(f"/proc/{b.pid}/comm").read().rstrip("\n")
        for cache in (cold, strict):
            assert cache.get(b.pid, b_event)["exe"] == os.path.realpath(sys.executable)
    finally:
        ended(b)
    # Gone now: b's reading stands for b's event; for a later one only within
    # the grace (a short-lived process's last connects) and under b's name.
    python = os.path.realpath(sys.executable)
    later = time.monotonic_ns()
    assert strict.get(b.pid, b_event)["exe"] == python
    assert (strict.get(b.pid, later)["proc_error"], strict.get(b.pid, later)["exe"]) == (EXITED, None)
    assert cold.get(b.pid, later, b_comm)["exe"] == python
    assert (cold.get(b.pid, later, "other")["proc_error"]) == EXITED


def start_ns(pid: int) -> int:
    """A process's start as a connection event carries it (the kernel's
    start_boottime; /proc has it in ticks, which is all that is compared)."""
    return int(stat_fields(pid)[19]) * TICK_NS


def test_with_the_start_time_an_event_gets_its_own_process_alive_or_gone():
    """The kernel's start time names the process exactly: a reading of it
    answers its events after it is gone and its pid is taken again, and the
    new process's events get the new one's; a process never read is REUSED
    while its pid is taken, EXITED once free."""
    procs, cold = ProcCache(), ProcCache()
    a = subprocess.Popen(["/usr/bin/sleep", "60"])
    try:
        wait_until(lambda: os.readlink(f"/proc/{a.pid}/exe") == "/usr/bin/sleep",
                   not_yet=(OSError,), what="sleep's exec")
        a_start = start_ns(a.pid)
        assert procs.get(a.pid, comm="sleep", start_ns=a_start)["exe"] == "/usr/bin/sleep"
    finally:
        ended(a)
    assert procs.get(a.pid, comm="sleep", start_ns=a_start)["exe"] == "/usr/bin/sleep"   # gone: its reading
    wait_until(lambda: time.clock_gettime_ns(time.CLOCK_BOOTTIME) > a_start + 2 * TICK_NS, what="a clock tick")
    b = spawn_at(a.pid, PY_SLEEP)
    try:
        wait_until(lambda: b"time.sleep" in open(f"/proc/{b.pid}/cmdline", "rb").read(), what="b's exec")
        b_start, b_comm = start_ns(b.pid), open(f"/proc/{b.pid}/comm").read().rstrip("\n")
        assert b_start != a_start
        python = os.path.realpath(sys.executable)
        assert procs.get(a.pid, comm="sleep", start_ns=a_start)["exe"] == "/usr/bin/sleep"
        assert procs.get(b.pid, comm=b_comm, start_ns=b_start)["exe"] == python
        stale = cold.get(a.pid, comm="sleep", start_ns=a_start)
        assert (stale["proc_error"], stale["exe"], stale["ppid"]) == (REUSED, None, None)
        # A thread's own name (pthread_setname_np) is the same process.
        assert procs.get(b.pid, comm="worker-1", start_ns=b_start)["exe"] == python
    finally:
        ended(b)
    assert procs.get(b.pid, comm="worker-1", start_ns=b_start)["exe"] == python
    assert cold.get(b.pid, comm=b_comm, start_ns=b_start)["proc_error"] == EXITED


def test_with_the_start_time_an_exec_since_the_reading_is_read_again():
    """exec keeps the start time and renames: a reading made before it is
    not given to the new program's events."""
    procs = ProcCache()
    p = subprocess.Popen(["/bin/sh", "-c", "read x; exec /usr/bin/sleep 60"], stdin=subprocess.PIPE)
    try:
        sh = os.path.realpath("/bin/sh")
        wait_until(lambda: os.readlink(f"/proc/{p.pid}/exe") == sh, not_yet=(OSError,), what="sh's exec")
        start = start_ns(p.pid)
        assert procs.get(p.pid, comm="sh", start_ns=start)["exe"] == sh
        p.stdin.write(b"go\n")
        p.stdin.flush()
        wait_until(lambda: os.readlink(f"/proc/{p.pid}/exe") == "/usr/bin/sleep", not_yet=(OSError,),
                   what="the exec of sleep")
        assert start_ns(p.pid) == start
        assert procs.get(p.pid, comm="sleep", start_ns=start)["exe"] == "/usr/bin/sleep"
    finally:
        ended(p)


KERNEL_SKIP = kernel_test_skip_reason()


@pytest.mark.skipif(KERNEL_SKIP is not None, reason=str(KERNEL_SKIP))
def test_a_forked_child_on_a_reused_pid_has_no_earlier_exec_path():
    from netsentinel.kernel.outbound import OutboundMonitor
    seen = []
    m = OutboundMonitor()
    m.start(seen.append, lambda n: None)
    try:
        a = subprocess.Popen(["/usr/bin/sleep", "60"])   # exec'd: the kernel records its path
        wait_until(lambda: os.readlink(f"/proc/{a.pid}/exe") == "/usr/bin/sleep",
                   not_yet=(OSError,), what="sleep's exec")
        ended(a)
        forker = subprocess.Popen([sys.executable, "-c", FORKER, str(a.pid)], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)
        out, err = forker.communicate(timeout=60)
        assert forker.returncode == 0, err

        def by(pid):
            return [e for e in seen if e.pid == pid]

        def sightings():
            m.poll(100)
            return by(a.pid) and by(forker.pid)
        wait_until(sightings, timeout=20, what="both raw-socket sightings")
        assert [e.exec_path for e in by(forker.pid)] == [sys.executable]   # it was exec'd
        assert [e.exec_path for e in by(a.pid)] == [None]   # not sleep's: the child never exec'd
    finally:
        m.stop()
