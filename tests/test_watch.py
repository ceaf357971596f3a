"""netsentinel.watch.FileSignature, the one hot-reload change detector, and
the blind spot every stat-only copy had: a same-size rewrite in place within
one timestamp tick."""

import json
import os

from netsentinel import watch
from netsentinel.analyzer.addrlist import AddressList
from netsentinel.analyzer import settings
from netsentinel.loader.cmdqueue import CommandQueue
from netsentinel.records import BAN_COMMANDS, LLM_CONFIG
from netsentinel.store import RecordsStore
from netsentinel.whitelist import WhitelistFile


def rewrite_in_place_keeping_mtime(path, text: str) -> None:
    """What `echo ... > file` does twice within one tick looks like, as far
    as mtime goes: same size, same inode, mtime as before."""
    before = os.stat(path)
    assert len(text.encode()) == before.st_size
    with open(path, "r+") as f:
        f.write(text)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = os.stat(path)
    assert (after.st_ino, after.st_size, after.st_mtime_ns) == (
        before.st_ino, before.st_size, before.st_mtime_ns)


def test_same_size_rewrite_with_mtime_restored_is_seen(tmp_path):
    path = tmp_path / "f"
    path.write_text("AAAA")
    sig = watch.FileSignature(path)
    assert sig.changed() and sig.present
    assert not sig.changed()
    rewrite_in_place_keeping_mtime(path, "BBBB")
    assert sig.changed()
    assert not sig.changed()


def test_same_tick_rewrite_is_seen_by_content_while_the_file_is_young(tmp_path, monkeypatch):
    """Even with every stat field identical (ctime too: the kernel's coarse
    clock stamped both writes alike), the content decides."""
    path = tmp_path / "f"
    path.write_text("AAAA")
    frozen = os.lstat(path)
    monkeypatch.setattr(watch.os, "lstat", lambda p: frozen)
    sig = watch.FileSignature(path)
    assert sig.changed()
    with open(path, "r+") as f:
        f.write("BBBB")
    assert sig.changed()
    assert not sig.changed()


def test_a_settled_file_is_judged_by_stat_alone(tmp_path, monkeypatch):
    path = tmp_path / "f"
    path.write_text("AAAA")
    sig = watch.FileSignature(path)
    real_time = watch.time.time
    monkeypatch.setattr(watch.time, "time", lambda: real_time() + 2 * watch.SETTLE_S)
    assert sig.changed()

    def no_reads(*a, **k):
        raise AssertionError("a settled file was read")
    monkeypatch.setattr(watch.os, "open", no_reads)
    assert not sig.changed() and not sig.changed()


def test_appearing_disappearing_and_own_writes(tmp_path):
    path = tmp_path / "f"
    sig = watch.FileSignature(path)
    assert sig.changed() and not sig.present and sig.error
    assert not sig.changed()
    path.write_text("x")
    assert sig.changed() and sig.present
    path.write_text("yy")
    sig.remember()  # our own write: not a change
    assert not sig.changed()
    path.unlink()
    assert sig.changed() and not sig.present
    sig.forget()
    assert sig.changed()


def test_symlink_is_not_followed_unless_asked(tmp_path):
    target = tmp_path / "target"
    target.write_text("AAAA")
    link = tmp_path / "link"
    link.symlink_to(target)
    nofollow, follow = watch.FileSignature(link), watch.FileSignature(link, follow_symlinks=True)
    assert nofollow.changed() and follow.changed()
    rewrite_in_place_keeping_mtime(target, "BBBB")
    assert follow.changed()
    assert not nofollow.changed()  # the link itself did not change


# ------------------------------------------------ the four users, same blind spot
def test_whitelist_reloads_a_same_size_rewrite(tmp_path):
    path = tmp_path / "filter_config.json"
    path.write_text(json.dumps({"trusted_ports": [8443]}))
    wf = WhitelistFile(path, warn=lambda m: None)
    assert wf.current().ports == {8443}
    rewrite_in_place_keeping_mtime(path, json.dumps({"trusted_ports": [8444]}))
    assert wf.current().ports == {8444}


def test_settings_reload_a_same_size_rewrite(tmp_path, monkeypatch):
    monkeypatch.setattr(settings, "CHECK_EVERY", 0.0)  # how often it looks is not under test
    store = RecordsStore(tmp_path)
    store.path(LLM_CONFIG).write_text(json.dumps({"scan_port_threshold": 15}))
    watcher = settings.SettingsWatcher(store, {}, warn=lambda m: None)
    assert watcher.current()["scan_port_threshold"] == 15
    rewrite_in_place_keeping_mtime(store.path(LLM_CONFIG), json.dumps({"scan_port_threshold": 16}))
    assert watcher.current()["scan_port_threshold"] == 16


def test_known_bad_list_reloads_a_same_size_rewrite(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_text("192.0.2.1\n")
    lst = AddressList(str(path), warn=lambda m: None)
    assert lst.lookup("192.0.2.1") == "192.0.2.1"
    rewrite_in_place_keeping_mtime(path, "192.0.2.2\n")
    lst.reload()
    assert lst.lookup("192.0.2.2") == "192.0.2.2" and lst.lookup("192.0.2.1") is None


def test_command_queue_sees_a_same_size_rewrite(tmp_path):
    first, second = '[{"action":"ban","ip":"192.0.2.1"}]', '[{"action":"ban","ip":"192.0.2.2"}]'
    store = RecordsStore(tmp_path)
    handled: list = []
    q = CommandQueue(store, BAN_COMMANDS, handled.append, lambda *a: None, commit=lambda: None)
    path = store.path(BAN_COMMANDS)
    path.write_text(first)
    assert q.changed()
    # A person's file that the loader has not consumed yet (say it is busy):
    # the in-place rewrite must still count as a change.
    rewrite_in_place_keeping_mtime(path, second)
    assert q.changed()
    assert q.process() == 1 and handled == [json.loads(second)[0]]
