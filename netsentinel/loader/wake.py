"""The enforcement loop's wake-up (loader/enforceloop.py): a command file
written wakes it at once instead of at its next poll.

The loop looks for commands every POLL_MS; waiting for that poll was, on
average, half of it of every ban's latency, and under a connect flood the
loader's share of the CPU stretches each wait. The threads that see a
write session end (cmdsessions under fanotify, cmdwatch's inotify
follower) set COMMANDS; the loop waits on it with POLL_MS as the upper
bound, so nothing depends on the wake-up: a missed one costs a poll."""

from __future__ import annotations

import threading

COMMANDS = threading.Event()


def poke() -> None:
    """A command file (or its drop directory) may have something new."""
    COMMANDS.set()
