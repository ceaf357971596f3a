"""loader/wake.py: the gate the event thread steps aside at while a command
goes into the kernel, and the control threads' priority. Real threads and
real nice levels (root: raising a priority needs CAP_SYS_NICE)."""

from __future__ import annotations

import os
import threading

import pytest

from netsentinel.loader import wake
from netsentinel.testing.lab import wait_until


def _nice(tid: int) -> int:
    return os.getpriority(os.PRIO_PROCESS, tid)


class EventThread:
    """A thread standing in for the loader's event thread: enables the gate
    (as EnforceLoop.start does, from the event thread) and pauses on demand."""

    def __init__(self, gate: wake.Gate):
        self.gate, self.go, self.done = gate, threading.Event(), threading.Event()
        self.enabled, self.stop = threading.Event(), False
        self.tid = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        wait_until(self.enabled.is_set, 10, 0.01, "the gate enabled")

    def _run(self) -> None:
        self.tid = threading.get_native_id()
        self.gate.enable(True)
        self.enabled.set()
        while not self.stop:
            self.go.wait()
            self.go.clear()
            if not self.stop:
                self.gate.pause()
                self.done.set()

    def pause_once(self) -> None:
        self.done.clear()
        self.go.set()

    def close(self) -> None:
        self.stop = True
        self.go.set()
        self.thread.join(5)


@pytest.fixture
def event_thread():
    gate = wake.Gate()
    t = EventThread(gate)
    yield gate, t
    t.close()


def test_the_event_thread_waits_while_a_command_is_applied(event_thread):
    gate, t = event_thread
    release = threading.Event()

    def control():
        with gate.held():
            release.wait(10)
    c = threading.Thread(target=control, daemon=True)
    c.start()
    wait_until(lambda: gate.shut, 10, 0.01, "the gate shut")
    t.pause_once()
    release.set()
    c.join(10)
    wait_until(t.done.is_set, 10, 0.01, "the event thread going on once the pass ended")
    assert not gate.shut


def test_a_poke_shuts_the_gate_until_the_pass_that_applies_it(event_thread):
    gate, _t = event_thread
    gate.due()
    assert gate.shut and gate.is_due()
    with gate.held():
        assert gate.shut and not gate.is_due()   # this pass is the poke's
    assert not gate.shut


def test_a_long_pass_slows_the_event_thread_down_and_never_stops_it(event_thread):
    """A pass holding the gate for ever: the event thread waits YIELD_MAX_S
    once, then goes on for as long as that same shutting lasts."""
    gate, t = event_thread
    release = threading.Event()

    def control():
        with gate.held():
            release.wait(30)
    threading.Thread(target=control, daemon=True).start()
    wait_until(lambda: gate.shut, 10, 0.01, "the gate shut")
    for _ in range(3):
        t.pause_once()
        wait_until(t.done.is_set, 10, 0.01, "the event thread going on while the pass lasts")
    assert gate.shut
    release.set()


def test_a_disabled_gate_never_shuts():
    """No enforcement loop (monitor only, or stopped): nothing will open it."""
    gate = wake.Gate()
    gate.due()
    with gate.held():
        assert not gate.shut
    gate.pause()   # returns at once: nothing is held


@pytest.mark.skipif(os.geteuid() != 0, reason="raising a thread's priority needs CAP_SYS_NICE (root)")
def test_the_event_thread_runs_at_a_control_threads_priority_while_shut(event_thread):
    gate, t = event_thread
    base = _nice(t.tid)
    with gate.held():
        assert _nice(t.tid) == max(-20, base - wake.CONTROL_BOOST)
    assert _nice(t.tid) == base


@pytest.mark.skipif(os.geteuid() != 0, reason="raising a thread's priority needs CAP_SYS_NICE (root)")
def test_a_control_thread_runs_above_the_rest_of_the_process():
    seen = {}

    def control():
        tid = threading.get_native_id()
        seen["before"] = _nice(tid)
        wake.control_thread()
        seen["after"] = _nice(tid)
    c = threading.Thread(target=control)
    c.start()
    c.join(10)
    assert seen["after"] == max(-20, seen["before"] - wake.CONTROL_BOOST)
    assert _nice(threading.get_native_id()) == seen["before"]   # this thread unchanged
