"""RecordsStore on real files: atomic replace, the lock, corrupt files set
aside, symbolic links refused, file modes, JSON-lines rotation, the ban
command queue. (Many processes at once: test_store_concurrency.py.)"""

from __future__ import annotations

import json
import os
import re
import signal
import stat
import subprocess
import sys
import threading
import time

import pytest

from netsentinel.records import BAN_COMMANDS
from netsentinel.store import CorruptFile, LockTimeout, RecordsStore, StoreError
from netsentinel.timefmt import parse_iso

ASIDE_RE = re.compile(r"^(?P<name>.+)\.corrupt-\d{8}T\d{6}\.\d{6}Z$")


def leftovers(store: RecordsStore) -> list[str]:
    """Temp files a write may have left behind."""
    return [p.name for p in store.root.iterdir() if p.name.endswith(".tmp")]


def asides(store: RecordsStore, name: str) -> list:
    return sorted(p for p in store.root.iterdir()
                  if (m := ASIDE_RE.match(p.name)) and m["name"] == name)


# ---------------------------------------------------------------- atomic writes

def test_write_then_read_round_trip_leaves_no_temp_files(records):
    data = {"a": [1, 2, 3], "ü": "ünïcode"}
    for i in range(20):
        records.write("x.json", {**data, "i": i})
    assert records.read("x.json") == {**data, "i": 19}
    assert leftovers(records) == []
    assert sorted(p.name for p in records.root.iterdir()) == [".lock", "x.json"]


def test_failed_write_leaves_old_file_and_no_temp_file(records):
    records.write("x.json", {"ok": True})
    with pytest.raises(TypeError):
        records.write("x.json", {"not json": object()})
    assert records.read("x.json") == {"ok": True}
    assert leftovers(records) == []


def test_reader_never_sees_a_half_written_file(records):
    """A writer keeps replacing a ~1 MB file with one of two contents while a
    reader (its own store, as another process would have) parses it in a
    loop: every read is one whole version."""
    big_a = [{"n": i, "pad": "a" * 40} for i in range(15000)]
    big_b = [{"n": -i, "pad": "b" * 60} for i in range(12000)]
    records.write("big.json", big_a)
    reader_store = RecordsStore(records.root, warn=records.warn)
    stop = threading.Event()
    seen = {"a": 0, "b": 0}

    def writer():
        flip = False
        while not stop.is_set():
            records.write("big.json", big_b if flip else big_a)
            flip = not flip

    t = threading.Thread(target=writer)
    t.start()
    try:
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            data = reader_store.read("big.json", on_corrupt="raise")  # half a file would raise
            if data == big_a:
                seen["a"] += 1
            else:
                assert data == big_b
                seen["b"] += 1
    finally:
        stop.set()
        t.join()
    assert seen["a"] and seen["b"], seen  # the reader really raced the writer
    assert leftovers(records) == []


def test_update_none_leaves_file_untouched(records):
    records.write("x.json", {"v": 1})
    before = records.stat("x.json")
    assert records.update("x.json", lambda cur: None) is None
    after = records.stat("x.json")
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


def test_update_gets_a_copy_of_the_default(records):
    default = []
    records.update("l.json", lambda cur: cur + [1], default=default)
    assert default == [] and records.read("l.json") == [1]


def test_file_names_cannot_escape_the_directory(records):
    for bad in ("../x.json", "sub/x.json", ".lock", ".hidden"):
        with pytest.raises(StoreError):
            records.write(bad, {})


# ------------------------------------------------------------------------ lock

def test_lock_is_reentrant_within_a_store(records):
    with records.locked():
        with records.locked():
            records.update("x.json", lambda cur: {"n": 1}, default={})
        assert records.read("x.json") == {"n": 1}
    assert lock_is_free(records.root)  # released completely


def test_two_stores_over_one_directory_nest_without_deadlock(records):
    """threats.reject holds records/ while editing a filter_config.json that
    may live in records/ too (scripts/demo.py puts it there)."""
    other = RecordsStore(records.root, lock_timeout=0.5)
    with records.locked():
        other.update("y.json", lambda cur: {"ok": True}, default={})
    assert other.read("y.json") == {"ok": True}
    assert lock_is_free(records.root)


def lock_is_free(root) -> bool:
    """Whether another process could take the lock right now."""
    probe = subprocess.run(
        [sys.executable, "-c",
         "import fcntl, os, sys\n"
         "fd = os.open(sys.argv[1], os.O_RDWR)\n"
         "try:\n    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)\n"
         "except BlockingIOError:\n    sys.exit(1)\n",
         str(root / ".lock")], timeout=30)
    return probe.returncode == 0


@pytest.fixture
def lock_holder(records):
    """Another process holding the records lock until killed."""
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time; from netsentinel.store import RecordsStore\n"
         "s = RecordsStore(sys.argv[1])\n"
         "with s.locked():\n"
         "    print('held', flush=True); time.sleep(60)\n",
         str(records.root)],
        stdout=subprocess.PIPE, text=True, cwd=os.path.dirname(os.path.dirname(__file__)))
    try:
        assert holder.stdout.readline().strip() == "held"
        yield holder
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
        holder.stdout.close()


def test_lock_timeout_is_clear(records, lock_holder):
    records.lock_timeout = 0.3
    t0 = time.monotonic()
    with pytest.raises(LockTimeout) as exc:
        records.write("x.json", {})
    waited = time.monotonic() - t0
    assert 0.25 <= waited < 2.0
    msg = str(exc.value)
    assert msg == f"timed out after 0.3s waiting for {records.root / '.lock'}"
    assert not records.path("x.json").exists()


def test_lock_held_by_a_killed_process_is_released(records, lock_holder):
    records.lock_timeout = 0.2
    with pytest.raises(LockTimeout):
        with records.locked():
            pass
    lock_holder.send_signal(signal.SIGKILL)
    lock_holder.wait(timeout=10)
    records.lock_timeout = 5
    with records.locked():
        pass


def test_lock_timeout_between_threads(records):
    """Another thread of this process holding the lock: the same timeout."""
    other = RecordsStore(records.root, lock_timeout=0.3)
    held, release = threading.Event(), threading.Event()

    def hold():
        with records.locked():
            held.set()
            release.wait(10)
    t = threading.Thread(target=hold)
    t.start()
    try:
        assert held.wait(5)
        with pytest.raises(LockTimeout, match="timed out after 0.3s .*held by another thread"):
            other.write("x.json", {})
    finally:
        release.set()
        t.join()
    other.write("x.json", {"n": 2})
    assert records.read("x.json") == {"n": 2}


# -------------------------------------------------------------- corrupt files

def test_corrupt_file_is_set_aside_and_default_returned(records):
    records.path("x.json").write_text('{"half": ')
    assert records.read("x.json", default={"d": 1}) == {"d": 1}
    assert not records.path("x.json").exists()
    [aside] = asides(records, "x.json")
    assert aside.read_text() == '{"half": '
    assert len(records.warnings) == 1 and aside.name in records.warnings[0]
    assert "invalid JSON at line 1" in records.warnings[0]


def test_set_aside_files_are_never_overwritten(records):
    contents = [f'[{i}, ' for i in range(5)]
    for text in contents:
        records.path("x.json").write_text(text)
        assert records.read("x.json", default=[]) == []
    found = asides(records, "x.json")
    assert sorted(p.read_text() for p in found) == sorted(contents)


def test_on_corrupt_raise_and_default_leave_the_file_alone(records):
    records.path("x.json").write_text("not json")
    with pytest.raises(CorruptFile) as exc:
        records.read("x.json", on_corrupt="raise")
    assert "x.json" in str(exc.value)
    assert records.read("x.json", default=[7], on_corrupt="default") == [7]
    assert records.path("x.json").read_text() == "not json"
    assert asides(records, "x.json") == [] and records.warnings == []


def test_missing_and_empty_files_give_the_default(records):
    assert records.read("none.json", default={"a": 1}) == {"a": 1}
    records.path("empty.json").write_text("  \n")
    assert records.read("empty.json", default=[]) == []
    assert asides(records, "empty.json") == []


# -------------------------------------------------------------- symbolic links

def test_reading_through_a_symlink_is_refused(records, tmp_path):
    victim = tmp_path / "elsewhere.json"
    victim.write_text('{"secret": 1}')
    records.path("x.json").symlink_to(victim)
    with pytest.raises(StoreError, match="symbolic link"):
        records.read("x.json")


def test_symlinked_lock_file_is_refused(records, tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("keep")
    (records.root / ".lock").symlink_to(victim)
    with pytest.raises(StoreError, match="symbolic link"):
        records.write("x.json", {})
    assert victim.read_text() == "keep"


def test_write_replaces_a_planted_symlink_and_never_follows_it(records, tmp_path):
    victim = tmp_path / "victim.conf"
    victim.write_text("precious\n")
    victim_mode = stat.S_IMODE(victim.stat().st_mode)
    link = records.path(BAN_COMMANDS)
    link.symlink_to(victim)
    records.write(BAN_COMMANDS, [{"action": "ban", "ip": "203.0.113.9"}])
    assert not link.is_symlink()
    assert json.loads(link.read_text()) == [{"action": "ban", "ip": "203.0.113.9"}]
    assert victim.read_text() == "precious\n"
    assert stat.S_IMODE(victim.stat().st_mode) == victim_mode


# ------------------------------------------------------------------ file modes

def test_files_are_0644_and_dir_0755_whatever_the_umask(tmp_path):
    old = os.umask(0)
    try:
        store = RecordsStore(tmp_path / "rec")
        store.write("a.json", {})
        store.append_jsonl_many("h.jsonl", [{"x": 1}])
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "rec").stat().st_mode) == 0o755
    assert stat.S_IMODE((store.root / ".lock").stat().st_mode) == 0o600
    for name in ("a.json", "h.jsonl"):
        mode = stat.S_IMODE((store.root / name).stat().st_mode)
        assert mode == 0o644, (name, oct(mode))
        assert not mode & stat.S_IWOTH


# ------------------------------------------------------------- JSON lines

def read_lines(store, name):
    p = store.path(name)
    return [json.loads(x) for x in p.read_text().splitlines()] if p.exists() else []


def test_append_jsonl_rotates_and_keeps_order(records):
    max_bytes, keep = 300, 2
    for i in range(100):
        records.append_jsonl_many("h.jsonl", [{"i": i, "pad": "x" * 10}], max_bytes=max_bytes, keep=keep)
    names = sorted(p.name for p in records.root.iterdir() if p.name.startswith("h.jsonl"))
    assert names == ["h.jsonl", "h.jsonl.1", "h.jsonl.2"]  # never more than keep rotations
    for n in names:
        assert records.stat(n).st_size <= max_bytes
    kept = read_lines(records, "h.jsonl.2") + read_lines(records, "h.jsonl.1") + \
        read_lines(records, "h.jsonl")
    idx = [o["i"] for o in kept]
    assert idx == list(range(idx[0], 100))  # newest last, nothing missing in between
    assert len(idx) >= 2 * (max_bytes // 40)


def test_append_jsonl_many_and_oversized_line(records):
    records.append_jsonl_many("h.jsonl", [{"i": i} for i in range(10)], max_bytes=50, keep=5)
    records.append_jsonl_many("h.jsonl", [{"big": "y" * 200}], max_bytes=50, keep=5)
    chunks = [read_lines(records, f"h.jsonl.{k}") for k in range(5, 0, -1)]
    chunks.append(read_lines(records, "h.jsonl"))
    flat = [o for c in chunks for o in c]
    assert flat[-1] == {"big": "y" * 200} and chunks[-1] == [{"big": "y" * 200}]
    assert [o["i"] for o in flat[:-1]] == list(range(10 - len(flat) + 1, 10))


# --------------------------------------------------------------- ban commands

def test_append_command_stamps_and_appends(records):
    c1 = records.append_command({"action": "ban", "ip": "203.0.113.1"})
    c2 = records.append_command({"action": "unban", "ip": "203.0.113.1",
                                 "requested_at": "2026-01-01T00:00:00.000000Z"})
    assert parse_iso(c1["requested_at"]) == pytest.approx(time.time(), abs=60)
    assert records.read(BAN_COMMANDS) == [c1, c2]
    assert c2["requested_at"] == "2026-01-01T00:00:00.000000Z"


def test_append_command_keeps_hand_written_commands_as_the_loader_reads_them(records):
    """One object without brackets, and values appended with >>: all commands
    to the loader, so all kept (they used to be set aside, i.e. dropped)."""
    records.path(BAN_COMMANDS).write_text('{"action": "ban", "ip": "198.51.100.7"}\n'
                                          '[{"action": "ban", "ip": "198.51.100.8"}]\n')
    cmd = records.append_command({"action": "ban", "ip": "203.0.113.2"})
    assert [c["ip"] for c in records.read(BAN_COMMANDS)] == ["198.51.100.7", "198.51.100.8",
                                                             "203.0.113.2"]
    assert cmd["ip"] == "203.0.113.2" and not asides(records, BAN_COMMANDS)


def test_append_command_on_broken_json_sets_it_aside(records):
    records.path(BAN_COMMANDS).write_text('[{"action": "ban", ')
    cmd = records.append_command({"action": "ban", "ip": "203.0.113.3"})
    assert records.read(BAN_COMMANDS) == [cmd]
    [aside] = asides(records, BAN_COMMANDS)
    assert aside.read_text() == '[{"action": "ban", '


def test_reject_command_and_remove(records):
    records.reject_command({"action": "ban", "ip": "0.0.0.0/0"}, "too broad", source="test")
    [entry] = records.read("ban_commands.rejected.json")
    assert entry["command"] == {"action": "ban", "ip": "0.0.0.0/0"}
    assert entry["error"] == "too broad" and entry["by"] == "test" and entry["rejected_at"]
    assert records.remove("ban_commands.rejected.json") is True
    assert records.remove("ban_commands.rejected.json") is False


def test_a_value_with_non_utf8_bytes_is_written_as_text_not_a_crash(tmp_path):
    """A process name read with surrogateescape (bytes 0xff 0xfe) in any
    records file: written as \\xNN text; it once stopped the loader through
    records/stack.json."""
    from netsentinel.store import RecordsStore
    store = RecordsStore(tmp_path)
    store.write("x.json", {"connections": [{"comm": b"scan\xff\xfe".decode("utf-8", "surrogateescape")}]})
    assert store.read("x.json") == {"connections": [{"comm": "scan\\xff\\xfe"}]}
