"""loader/cmdwatch.py: write sessions on a command file, counted low, never high.

The follower's thread is not started here (a _Follower drained by hand), so
events stay queued exactly as a busy loader would leave them."""

from __future__ import annotations

import os

from netsentinel.loader.cmdwatch import WriteCounter, _Follower
from netsentinel.testing.lab import wait_until

NAME = "ban_commands.json"


def session(fd: int, text: bytes = b"[]\n") -> None:
    os.write(fd, text)
    os.close(fd)


def test_two_closes_in_a_row_count_twice(tmp_path):
    """Two writers open, both write, then close back to back: on one watch
    the two IN_CLOSE_WRITE events are identical neighbours and inotify keeps
    one. Through the directory and the inode they alternate and both count."""
    path = tmp_path / NAME
    path.write_text("")
    f = _Follower(tmp_path, NAME)
    control = _Follower(tmp_path, NAME)
    control._unwatch_file()                      # the directory's watch alone
    a = os.open(path, os.O_WRONLY | os.O_TRUNC)
    b = os.open(path, os.O_WRONLY | os.O_TRUNC)
    os.write(a, b"[1]")
    os.write(b, b"[2]")
    os.close(a)
    os.close(b)
    assert control.drain() == 1, "inotify no longer merges neighbours: simplify cmdwatch"
    assert f.drain() == 2 and (f.dir_closes, f.file_closes) == (2, 2)


def test_file_created_replaced_and_set_aside(tmp_path):
    path = tmp_path / NAME
    f = _Follower(tmp_path, NAME)
    session(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600))   # `>` creates it
    tmp = tmp_path / f".{NAME}.tmp"
    tmp.write_text("[]")
    os.rename(tmp, path)                         # a tool's atomic replace: a session
    assert f.drain() == 2
    session(os.open(path, os.O_WRONLY | os.O_TRUNC))   # into the new inode
    assert f.drain() == 3
    aside = tmp_path / f"{NAME}.corrupt-x"
    os.rename(path, aside)                       # set aside: its writes are no sessions
    f.drain()
    session(os.open(aside, os.O_WRONLY | os.O_APPEND))
    assert f.drain() == 3


def test_a_directory_at_the_name_counts_nothing(tmp_path):
    d = tmp_path / NAME
    d.mkdir()
    f = _Follower(tmp_path, NAME)
    session(os.open(d / "x", os.O_WRONLY | os.O_CREAT, 0o600))
    assert f.drain() == 0


def test_the_thread_counts_and_stops_with_its_counter(tmp_path):
    path = tmp_path / NAME
    path.write_text("")
    w = WriteCounter(tmp_path, NAME)
    f = w._f
    for _ in range(20):
        session(os.open(path, os.O_WRONLY | os.O_TRUNC))
    wait_until(lambda: f.sessions == 20, 5, what="20 sessions counted by the thread")
    assert w.drain() == 20 and not w.take_overflow()
    del w   # its queue is gone: the thread closes the inotify instance
    wait_until(lambda: f.fd == -1, 5, what="the follower to stop")


def test_a_write_session_on_the_file_wakes_the_enforcement_loop(tmp_path):
    """The follower's thread sets loader/wake.py's event when a session on
    its file ends (the enforcement loop then reads at once, not at its next
    poll); another file's writes in the same directory do not."""
    from netsentinel.loader import wake
    path = tmp_path / NAME
    path.write_text("")
    counter = WriteCounter(tmp_path, NAME)
    try:
        wake.COMMANDS.clear()
        (tmp_path / "status.json").write_text("{}")
        counter.drain()   # whichever thread takes them, they count as no session
        assert not wake.COMMANDS.is_set()
        session(os.open(path, os.O_WRONLY | os.O_TRUNC), b'[{"action": "ban", "ip": "192.0.2.1"}]')
        wait_until(wake.COMMANDS.is_set, timeout=10, what="the enforcement loop woken")
    finally:
        counter.close()
