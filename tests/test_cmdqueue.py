"""CommandQueue against people's in-place writes: `echo '[...]' > file`
truncates and then writes, at any moment, without our lock. Every command
must be handled exactly once, none lost."""

import json
import os

from netsentinel.loader.cmdqueue import CommandQueue
from netsentinel.store import RecordsStore


CMD1 = {"action": "ban", "ip": "203.0.113.1"}
CMD2 = {"action": "ban", "ip": "203.0.113.2"}


def make_queue(tmp_path, on_handle=None):
    store = RecordsStore(tmp_path)
    handled = []

    def handle(raw):
        handled.append(raw)
        if on_handle:
            on_handle(raw)
    q = CommandQueue(store, "ban_commands.json", handle, lambda *a: None, commit=lambda: None)
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
    after it: the write lands in the old inode and must be recovered."""
    person = {}

    def open_in_place(raw):
        if raw == CMD1:
            person["fd"] = os.open(path, os.O_WRONLY)
    store, q, handled, path = make_queue(tmp_path, open_in_place)
    real_write = store.write

    def write_then_person_writes(name, data):
        real_write(name, data)
        if "fd" in person:
            os.ftruncate(person["fd"], 0)
            os.write(person["fd"], json.dumps([CMD1, CMD2]).encode())
            os.close(person.pop("fd"))
    store.write = write_then_person_writes
    path.write_text(json.dumps([CMD1]))
    assert q.process() == 1
    assert json.loads(path.read_text()) == [CMD2], "the late write was not put back"
    q.process()
    assert handled == [CMD1, CMD2]


def test_half_written_file_is_left_alone_until_complete(tmp_path):
    store = RecordsStore(tmp_path)
    handled = []
    q = CommandQueue(store, "ban_commands.json", handled.append, lambda *a: None, commit=lambda: None)
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

