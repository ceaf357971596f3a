"""RuleTable.restore without a kernel: the saved rules and the rule commands
still queued (a loader killed between putting a rule in the pinned map and
saving filter_rules.json) reach the kernel as one set, in one load, so the
rule never leaves the map in between. The lab measures it with packets
(test_kernel_persist.py); this checks the order of loads anywhere."""

from __future__ import annotations

import json

from netsentinel.loader.ruletable import RuleTable
from netsentinel.netinfo import Protected
from netsentinel.store import RecordsStore


class FakeEnforcer:
    """The loads RuleTable asks for, in order (rule ids of each set)."""

    def __init__(self):
        self.loads: list[list[str]] = []

    def set_rules(self, rules) -> None:
        self.loads.append([r.id for r in rules])

    def rule_hits(self) -> dict:
        return {}


def rule(rid: str, port: int) -> dict:
    return {"id": rid, "action": "drop", "proto": "udp", "dport": port}


def table(tmp_path) -> tuple[RuleTable, FakeEnforcer, list]:
    enforcer, events = FakeEnforcer(), []
    t = RuleTable(RecordsStore(tmp_path), enforcer, Protected, lambda: [22],
                  lambda type_, **f: events.append((type_, f)), lambda msg: None)
    return t, enforcer, events


def test_saved_rules_and_queued_commands_load_once_as_one_set(tmp_path):
    (tmp_path / "filter_rules.json").write_text(json.dumps({"rules": [rule("kept", 1000)]}))
    (tmp_path / "rule_commands.json").write_text(json.dumps([
        {"action": "add_rule", "rule": rule("queued", 2000)},
        {"action": "remove_rule", "id": "gone"},
        {"action": "add_rule", "rule": {"id": "bad", "action": "explode"}}]))
    t, enforcer, events = table(tmp_path)
    assert t.restore() == 1                      # from the file; the queued one is a command
    assert enforcer.loads == [["kept", "queued"]]
    saved = json.loads((tmp_path / "filter_rules.json").read_text())
    assert [r["id"] for r in saved["rules"]] == ["kept", "queued"]
    assert json.loads((tmp_path / "rule_commands.json").read_text()) == []
    assert [e[0] for e in events] == ["rule", "rule", "rule_rejected"]
    # Commands after the start load as before: one set each.
    (tmp_path / "rule_commands.json").write_text(json.dumps([{"action": "remove_rule",
                                                               "id": "kept"}]))
    t.process_commands()
    assert enforcer.loads[-1] == ["queued"]


def test_nothing_queued_is_one_load_of_the_file(tmp_path):
    (tmp_path / "filter_rules.json").write_text(json.dumps({"rules": [rule("kept", 1000)]}))
    t, enforcer, _ = table(tmp_path)
    assert t.restore() == 1 and enforcer.loads == [["kept"]]
