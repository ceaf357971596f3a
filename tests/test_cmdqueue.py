"""CommandQueue against people's in-place writes: `echo '[...]' > file`
truncates and then writes, at any moment, without our lock. Every command
must be handled exactly once, none lost.

Most queues here run the counting path alone (serialise=False): the path a
loader takes without fanotify, and the only one a writer inside the test
process meets (the loader's own opens are never serialised). Serialised
writers: tests/test_cmdfan.py."""

import json
import os
import subprocess

import pytest

from netsentinel import dropdir
from poison import BAN, POISON_RULES, UNPARSEABLE_BANS
from netsentinel.loader.cmdqueue import CommandQueue
from netsentinel.store import RecordsStore
from netsentinel.testing.lab import wait_until


CMD1 = {"action": "ban", "ip": "203.0.113.1"}
CMD2 = {"action": "ban", "ip": "203.0.113.2"}


def make_queue(tmp_path, on_handle=None):  # (the counting path; see the top)
    store = RecordsStore(tmp_path)
    handled = []

    def handle(raw):
        handled.append(raw)
        if on_handle:
            on_handle(raw)
    q = CommandQueue(store, "ban_commands.json", handle, lambda *a: None, commit=lambda: None,
                     serialise=False)
    return store, q, handled, tmp_path / "ban_commands.json"


def test_person_truncating_while_we_consume_loses_nothing(tmp_path):
    """`echo CMD2 > file` has truncated the file (not yet written) at the
    moment we go to remove CMD1: we must not write [] over it."""
    person = {}

    def truncate_in_place(raw):
        if raw == CMD1:
            person["fd"] = os.open(path, os.O_WRONLY | os.O_TRUNC)
    store, q, handled, path = make_queue(tmp_path, truncate_in_place)
    path.write_text(json.dumps([CMD1]))
    assert q.process() == 1
    os.write(person["fd"], json.dumps([CMD2]).encode())   # the person's write lands now
    os.close(person["fd"])
    q.process()
    assert handled == [CMD1, CMD2]
    assert json.loads(path.read_text()) == []


def test_person_writing_into_the_replaced_file_loses_nothing(tmp_path):
    """The person opened the file before our atomic replace and writes
    after it: the write lands in the old inode and must be recovered: put
    back in the queue (a crash keeps it) and handled at once (a `>` after it
    could wipe it), then removed on the next pass, never handled twice."""
    person = {}

    def open_in_place(raw):
        if raw == CMD1:
            person["fd"] = os.open(path, os.O_WRONLY)
    store, q, handled, path = make_queue(tmp_path, open_in_place)
    real_write = store.write

    def write_then_person_writes(name, data, **kw):
        real_write(name, data, **kw)
        if "fd" in person:
            os.ftruncate(person["fd"], 0)
            os.write(person["fd"], json.dumps([CMD1, CMD2]).encode())
            os.close(person.pop("fd"))
    store.write = write_then_person_writes
    path.write_text(json.dumps([CMD1]))
    assert q.process() == 2
    assert handled == [CMD1, CMD2], "the late write was not handled"
    assert json.loads(path.read_text()) == [CMD2], "the late write was not put back"
    q.process()
    assert handled == [CMD1, CMD2] and json.loads(path.read_text()) == []


def test_half_written_file_is_left_alone_until_complete(tmp_path):
    store = RecordsStore(tmp_path)
    handled = []
    q = CommandQueue(store, "ban_commands.json", handled.append, lambda *a: None, commit=lambda: None,
                     serialise=False)
    path = tmp_path / "ban_commands.json"
    path.write_text('[{"action": "ban", "ip": "203.0.113.1"}]')
    q.process()
    assert handled == [{"action": "ban", "ip": "203.0.113.1"}]
    assert json.loads(path.read_text()) == []
    # A person is mid-write when we look: not handled, not rewritten, not set aside.
    path.write_text('[{"action": "ban", "ip": "203.')
    q.process()
    assert len(handled) == 1 and path.read_text() == '[{"action": "ban", "ip": "203.'
    path.write_text('[{"action": "ban", "ip": "203.0.113.2"}]')
    q.process()
    assert [c["ip"] for c in handled] == ["203.0.113.1", "203.0.113.2"]
    assert json.loads(path.read_text()) == []
    assert not list(tmp_path.glob("*.corrupt-*"))



# --------------------------------------------------------------- hostile input

def make_recording_queue(tmp_path, handle=None, name="ban_commands.json", serialise=False):
    """A queue whose refusals land in the rejected file, as the loader's do."""
    store = RecordsStore(tmp_path)
    handled = []
    q = None

    def refuse(raw, error):
        store.reject_command(raw, error, ref=q.current_ref)
    q = CommandQueue(store, name, handle or handled.append, refuse, commit=lambda: None,
                     serialise=serialise)
    return store, q, handled


def rejected(tmp_path, name="ban_commands.rejected.json"):
    p = tmp_path / name
    return json.loads(p.read_text()) if p.exists() else []


def settle(q, pred, timeout=300):  # a deadline, not a speed: 10,000 sessions on a loaded host
    wait_until(lambda: (q.process(), pred())[1], timeout=timeout, what="queue to settle")


POISON = UNPARSEABLE_BANS + [
    POISON_RULES[4],
    BAN % ('"reason": "' + "x" * 5_000_000 + '"'),  # over the 4 MB a command file may be
]


@pytest.mark.parametrize("text", POISON, ids=range(len(POISON)))
def test_poison_file_is_refused_once_and_the_next_command_still_applies(tmp_path, text):
    store, q, handled = make_recording_queue(tmp_path)
    path = tmp_path / "ban_commands.json"
    path.write_text(text)
    settle(q, lambda: not path.exists() or not path.read_text().strip())
    for _ in range(3):
        q.process()
    (entry,) = rejected(tmp_path)
    assert "\n" not in entry["error"] and entry["error"].startswith("ban_commands.json")
    assert handled == []
    # Kept aside for the owner to look at, and the queue goes on.
    assert list(tmp_path.glob("ban_commands.json.corrupt-*")) or "bytes" in entry["error"]
    path.write_text(json.dumps([CMD1]))
    settle(q, lambda: handled == [CMD1])


def test_a_command_that_crashes_its_handler_is_refused_alone(tmp_path):
    def handle(raw):
        if raw["ip"] == "203.0.113.1":
            raise OverflowError("cannot convert float infinity to integer")
        seen.append(raw)
    seen = []
    store, q, _ = make_recording_queue(tmp_path, handle)
    (tmp_path / "ban_commands.json").write_text(json.dumps([CMD1, CMD2]))
    assert q.process() == 2
    assert seen == [CMD2]
    (entry,) = rejected(tmp_path)
    assert entry["command"] == CMD1 and "OverflowError" in entry["error"]
    assert json.loads((tmp_path / "ban_commands.json").read_text()) == []


def test_a_command_handled_again_after_a_crash_is_refused_once(tmp_path):
    """The loader died after recording the refusal, before the queue shrank:
    the next loader handles the same command again; one refusal is kept."""
    bad = {"action": "ban", "ip": "not-an-address"}
    (tmp_path / "ban_commands.json").write_text(json.dumps([bad]))
    for _ in range(2):  # two loaders, the first killed before _remove_handled
        store = RecordsStore(tmp_path)
        q = CommandQueue(store, "ban_commands.json", lambda raw: None, None, commit=lambda: None,
                         serialise=False)
        q.handle = lambda raw, q=q, store=store: store.reject_command(raw, "bad ip", ref=q.current_ref)
        q._remove_handled = lambda: 0
        q.process()
    assert len(rejected(tmp_path)) == 1


# --------------------------------------------------------------- many writers

def _shells(tmp_path, writers, per_writer, redirect):
    target = tmp_path / "ban_commands.json"
    script = (f'for i in $(seq 1 {per_writer}); do echo "[{{\\"action\\": \\"ban\\", '
              f'\\"ip\\": \\"10.$1.$((i / 250)).$((i % 250))\\"}}]" {redirect} {target}; done')
    return [subprocess.Popen(["sh", "-c", script, "sh", str(w)]) for w in range(writers)]


def _drain_while(q, procs, done):
    while any(p.poll() is None for p in procs):
        q.process()
    settle(q, done)


@pytest.mark.parametrize("serialise", [False, True], ids=["counted", "serialised"])
def test_fifty_shells_appending_lose_nothing(tmp_path, serialise):
    (tmp_path / "ban_commands.json").touch()  # (a write with no command would count as lost)
    store, q, handled = make_recording_queue(tmp_path, serialise=serialise)
    _drain_while(q, _shells(tmp_path, 50, 200, ">>"), lambda: len(handled) >= 10_000)
    assert len(handled) == 10_000 and len({c["ip"] for c in handled}) == 10_000
    assert not [e for e in rejected(tmp_path) if "lost_writes" in e["command"]]


@pytest.mark.parametrize("writers, per_writer", [(50, 200), (1, 200)])
def test_writes_replaced_before_they_were_read_are_reported(tmp_path, writers, per_writer):
    """Without fanotify, `echo > file` from many shells: what a later write
    replaced before the loader read it cannot come back, so it is counted
    and reported (in the rejected file, with the advice). inotify merges
    identical neighbouring events, so the count may be low, never high.
    (With fanotify every one is applied: test_cmdfan.)"""
    store, q, handled = make_recording_queue(tmp_path)
    total = writers * per_writer
    _drain_while(q, _shells(tmp_path, writers, per_writer, ">"), lambda: True)
    for _ in range(5):
        q.process()
    reports = [e for e in rejected(tmp_path) if "lost_writes" in e["command"]]
    lost = sum(e["command"]["lost_writes"] for e in reports)
    assert reports and all(">>" in e["error"] and "ban_commands.d/" in e["error"] for e in reports)
    assert len(handled) + lost <= total
    # The fallback's bound. Measured 99.48-99.97% accounted for on this 2-core
    # VM (the low end under a load average over 10; 94-99% with one watch
    # drained by the loop); the rest are two closes racing on two CPUs, which
    # inotify merges on both watches (loader/cmdwatch.py).
    assert len(handled) + lost >= 0.99 * total, (len(handled), lost)


# --------------------------------------------------------------- drop directory

def test_drop_directory_ten_thousand_files_all_applied_and_removed(tmp_path):
    store, q, handled = make_recording_queue(tmp_path)
    d = dropdir.ensure(tmp_path, "ban_commands.json")
    for i in range(10_000):
        dropdir.submit(tmp_path, d.name, {"action": "ban", "ip": f"10.1.{i // 250}.{i % 250}"})
    settle(q, lambda: len(handled) >= 10_000)
    assert len({c["ip"] for c in handled}) == 10_000 and list(d.iterdir()) == []
    assert rejected(tmp_path) == []


def test_drop_directory_bad_files_are_refused_once_and_removed(tmp_path):
    store, q, handled = make_recording_queue(tmp_path)
    d = dropdir.ensure(tmp_path, "ban_commands.json")
    (d / "a-nan.json").write_text('{"action": "ban", "ip": "203.0.113.1", "ttl_seconds": NaN}')
    (d / "b-list.json").write_text(json.dumps([CMD1, CMD2]))
    (d / ".c-being-written.json.tmp").write_text('{"action": ')
    os.symlink("/etc/shadow", d / "d-link.json")
    settle(q, lambda: len(handled) == 2)
    q.process()
    assert handled == [CMD1, CMD2]
    errors = [e["error"] for e in rejected(tmp_path)]
    assert len(errors) == 2
    assert any("a-nan.json: NaN" in e for e in errors)
    assert any("d-link.json is a symbolic link" in e for e in errors)
    assert [p.name for p in d.iterdir()] == [".c-being-written.json.tmp"]
