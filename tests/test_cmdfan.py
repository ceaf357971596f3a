"""loader/cmdfan.py: writers of a command file let in one session at a time
(fanotify permission events), so `echo > file` from many shells at once
loses nothing: every command applied, exactly once.

The queue runs in this process, the writers are real shells (other pids:
the loader's own opens are never serialised)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from netsentinel.loader import cmdfan
from netsentinel.testing.lab import wait_until
from test_cmdqueue import _drain_while, _shells, make_recording_queue, rejected, settle

NAME = "ban_commands.json"


@pytest.fixture
def queue(tmp_path):
    store, q, handled = make_recording_queue(tmp_path, serialise=True)
    if q.fan is None:
        pytest.skip(f"writers cannot be serialised here: {cmdfan.unavailable}")
    yield q, handled
    q.fan.close()


def _cmd(ip: str) -> str:
    return json.dumps([{"action": "ban", "ip": ip}])


def _lost(tmp_path) -> list:
    return [e for e in rejected(tmp_path) if "lost_writes" in e["command"]]


@pytest.mark.parametrize("writers, per_writer", [(50, 200), (1, 200)])
def test_shells_writing_with_gt_every_command_applied_once(tmp_path, queue, writers, per_writer):
    """The issue's test (50 shells) and one person in a tight loop."""
    q, handled = queue
    total = writers * per_writer
    _drain_while(q, _shells(tmp_path, writers, per_writer, ">"), lambda: len(handled) >= total)
    for _ in range(3):
        q.process()
    assert len(handled) == total and len({c["ip"] for c in handled}) == total
    assert rejected(tmp_path) == [] and not _lost(tmp_path)
    st = q.fan.status()
    assert st["sessions"] >= total and st["held_too_long"] == 0 and st["failed"] is None, st


def test_poison_written_by_a_shell_is_refused_once_and_the_queue_goes_on(tmp_path, queue):
    q, handled = queue
    path = tmp_path / NAME
    subprocess.run(["sh", "-c", f"echo '[{{\"action\": \"ban\", \"ttl_seconds\": NaN}}]' > {path}"],
                   check=True)
    settle(q, lambda: len(rejected(tmp_path)) == 1)
    subprocess.run(["sh", "-c", f"echo '{_cmd('203.0.113.1')}' > {path}"], check=True)
    settle(q, lambda: len(handled) == 1)
    (entry,) = rejected(tmp_path)
    assert entry["error"].startswith(f"{NAME}.corrupt-") and "NaN" in entry["error"]
    # Kept aside for its author, exactly as written, as a command file is.
    (aside,) = tmp_path.glob(f"{NAME}.corrupt-*")
    assert aside.read_text() == '[{"action": "ban", "ttl_seconds": NaN}]\n' == entry["command"]["raw"]
    assert (tmp_path / NAME).read_text() == "[]\n"


def test_cat_while_writers_write(tmp_path, queue):
    q, handled = queue
    path = tmp_path / NAME
    path.write_text("")
    cat = subprocess.Popen(["sh", "-c", f"for i in $(seq 1 200); do cat {path} >/dev/null || exit 1; done"])
    _drain_while(q, _shells(tmp_path, 10, 100, ">") + [cat], lambda: len(handled) >= 1000)
    assert cat.returncode == 0 and len({c["ip"] for c in handled}) == 1000


APPEND = """
import sys
from netsentinel.store import RecordsStore
store = RecordsStore(sys.argv[1], lock_timeout=600)
for i in range(100):
    store.append_command({"action": "ban", "ip": f"10.{sys.argv[2]}.1.{i}"})
"""


def test_store_api_writers_among_shells_all_applied(tmp_path, queue):
    """Tools write under the lock and rename onto the name: what they left
    is stored before the next `>` may open (and truncate) the file."""
    q, handled = queue
    tools = [subprocess.Popen([sys.executable, "-c", APPEND, str(tmp_path), str(100 + w)])
             for w in range(5)]
    _drain_while(q, _shells(tmp_path, 20, 100, ">") + tools, lambda: len(handled) >= 2500)
    assert all(t.returncode == 0 for t in tools)
    assert len({c["ip"] for c in handled}) == len(handled) == 2500 and rejected(tmp_path) == []


def _holder(path, mode: str, marker) -> subprocess.Popen:
    """A process holding the command file open (a reader, an editor)."""
    p = subprocess.Popen(["sh", "-c", f'exec 3{mode}"{path}"; echo > "{marker}"; exec sleep 600'])
    wait_until(lambda: marker.exists(), 10, what="the holder to open the file")
    return p


def test_a_reader_holding_the_file_for_a_minute_blocks_nobody_for_long(tmp_path, queue):
    q, handled = queue
    (tmp_path / NAME).write_text("")
    holder = _holder(tmp_path / NAME, "<", tmp_path / "held")
    try:
        _drain_while(q, _shells(tmp_path, 5, 20, ">"), lambda: len(handled) >= 100)
        assert holder.poll() is None, "the reader let go: nothing was tested"
        assert len({c["ip"] for c in handled}) == 100 and not _lost(tmp_path)
        assert q.fan.status()["held_too_long"] == 1
    finally:
        holder.kill()
        holder.wait()


STANDIN = """
import json, os, sys, time
from netsentinel.loader import cmdfan, cmdsessions
cmdsessions.BOUND_S = 3600  # only the kill can let the writers go
from netsentinel.loader.cmdqueue import CommandQueue
from netsentinel.store import RecordsStore
q = CommandQueue(RecordsStore(sys.argv[1]), "ban_commands.json", lambda raw: None,
                 lambda *a: None, commit=lambda: None)
while True:
    q.process()
    with open(sys.argv[2] + ".tmp", "w") as f:
        json.dump(q.fan.status() if q.fan else {"unavailable": cmdfan.unavailable}, f)
    os.replace(sys.argv[2] + ".tmp", sys.argv[2])
    time.sleep(0.05)  # a loader's loop pace
"""


def test_writers_waiting_go_on_when_the_loader_is_killed(tmp_path):
    rec, status = tmp_path / "rec", tmp_path / "status.json"
    rec.mkdir()
    loader = subprocess.Popen([sys.executable, "-c", STANDIN, str(rec), str(status)])
    holder = writers = None
    try:
        st = wait_until(lambda: json.loads(status.read_text()), 30, what="the stand-in loader",
                        not_yet=(FileNotFoundError, json.JSONDecodeError))
        if "unavailable" in st:
            pytest.skip(f"writers cannot be serialised here: {st['unavailable']}")
        holder = _holder(rec / NAME, ">>", tmp_path / "held")
        writers = [subprocess.Popen(["sh", "-c", f"echo '{_cmd(f'10.0.0.{i}')}' > {rec / NAME}"])
                   for i in range(5)]
        wait_until(lambda: json.loads(status.read_text())["waiting"] == 5, 30,
                   what="five writers waiting", not_yet=(json.JSONDecodeError,))
        assert all(w.poll() is None for w in writers)
        loader.send_signal(signal.SIGKILL)
        loader.wait()
        for w in writers:  # the kernel answers every open still pending
            assert w.wait(timeout=30) == 0
    finally:
        for p in [loader, holder] + (writers or []):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()


def test_without_privilege_the_queue_says_why_and_counts(tmp_path):
    """fanotify needs CAP_SYS_ADMIN: a queue run by another user falls back
    to counting (cmdwatch), with the reason."""
    if os.geteuid() != 0:
        pytest.skip("needs root to run the check as another user")
    tmp_path.chmod(0o777)
    code = ("from netsentinel.loader import cmdfan; import sys; "
            "r = cmdfan.attach(sys.argv[1], 'ban_commands.json'); print(r, cmdfan.unavailable)")
    out = subprocess.run(["runuser", "-u", "nobody", "--", sys.executable, "-c", code,
                          str(tmp_path)], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}).stdout
    assert out.startswith("None fanotify unavailable (fanotify_init: Operation not permitted)"), out


def test_a_shell_write_wakes_the_enforcement_loop(tmp_path, queue):
    """A session stored by the responder sets loader/wake.py's event: the
    enforcement loop reads it at once instead of at its next poll."""
    from netsentinel.loader import wake
    q, handled = queue
    wake.COMMANDS.clear()
    subprocess.run(["sh", "-c", f"echo '{_cmd('192.0.2.7')}' > {tmp_path / NAME}"], check=True)
    wait_until(wake.COMMANDS.is_set, timeout=10, what="the enforcement loop woken")
    q.process()
    assert [c["ip"] for c in handled] == ["192.0.2.7"]


def test_a_command_appended_under_the_lock_wakes_the_enforcement_loop(tmp_path, queue):
    """RecordsStore.append_command (the analyzer, the dashboard) renames its
    file onto the name: no session on the command file ends. The writer
    letting go of records/.lock wakes the loop instead of its next poll."""
    from netsentinel.loader import wake
    q, handled = queue
    wake.COMMANDS.clear()
    code = ("import sys; from netsentinel.store import RecordsStore; "
            "RecordsStore(sys.argv[1]).append_command({'action': 'ban', 'ip': '192.0.2.8'})")
    subprocess.run([sys.executable, "-c", code, str(tmp_path)], check=True)
    wait_until(wake.COMMANDS.is_set, timeout=10, what="the enforcement loop woken")
    q.process()
    assert [c["ip"] for c in handled] == ["192.0.2.8"]
