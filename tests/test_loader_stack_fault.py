"""A fault in stack visibility (a kernel race, a bug) must not end the
loader's monitoring: each is said once on the stream, and after
STACK_FAULTS_MAX in a row the stack is stopped and the loop goes on without it."""

from __future__ import annotations

from netsentinel.loader import run
from netsentinel.loader.run import Loader


class Events:
    def __init__(self):
        self.got = []

    def emit(self, type_, **fields):
        self.got.append((type_, fields))


class BrokenStack:
    stopped = False

    def tick(self, now):
        raise KeyError(42)

    def stop(self):
        self.stopped = True


def test_stack_faults_are_reported_and_turn_it_off_not_the_loader(capsys):
    lo = Loader.__new__(Loader)   # the fault path alone: no kernel
    lo.events, lo.stack, lo._stack_faults = Events(), BrokenStack(), 0
    stack = lo.stack
    for _ in range(run.STACK_FAULTS_MAX):
        try:
            lo.stack.tick(0)
        except Exception as e:  # what _loop catches
            lo._stack_fault(e)
    assert [t for t, _ in lo.events.got] == ["warning"] * run.STACK_FAULTS_MAX
    assert lo.events.got[0][1]["message"] == "stack visibility: KeyError: 42"
    assert "turned off after 5 failures in a row" in lo.events.got[-1][1]["message"]
    assert lo.stack is None and stack.stopped
    assert capsys.readouterr().err.count("stack visibility: KeyError") == run.STACK_FAULTS_MAX
