"""Containing the local process behind a threat (issue 12), without the
kernel: contain commands are checked the same way for every writer
(containcmd), Review offers "Contain process" first when a local process is
the actor (banning stays first for C2 and known-bad destinations), stopping
the process needs its confirmation, and `netsentinel contain` queues the
same commands. The lab half is tests/test_kernel_contain.py."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from dashboard_seed import seed
from netsentinel import threats
from netsentinel.containcmd import ContainRefused, parse_command
from netsentinel.records import BAN_COMMANDS, CONTAIN_COMMANDS, PENDING_THREATS
from netsentinel.store import RecordsStore
from test_dashboard_app import env, read, start, texts  # noqa: F401  (env: fixture)


@pytest.mark.parametrize("raw, why", [
    ([], "JSON object"),
    ({"action": "isolate", "pid": 5}, "unknown action"),
    ({"action": "contain"}, "needs a pid, an exe"),
    ({"action": "contain", "pid": 1}, "init"),
    ({"action": "contain", "pid": True}, "whole number"),
    ({"action": "contain", "pid": 2 ** 40}, "whole number"),
    ({"action": "contain", "exe": "relative/x"}, "absolute path"),
    ({"action": "contain", "exe": "/tmp/x (deleted)"}, "deleted"),
    ({"action": "contain", "pid": 5, "by_exe": "yes"}, "by_exe"),
    ({"action": "contain", "pid": 5, "signal": "HUP"}, "signal must be"),
    ({"action": "contain", "exe": "/usr/bin/x", "signal": "KILL"}, "needs a pid"),
    ({"action": "contain", "pid": 5, "ttl_seconds": float("nan")}, "ttl_seconds"),
    ({"action": "contain", "pid": 5, "reason": "x" * 3000}, "characters long"),
    ({"action": "release"}, "release needs"),
    ({"action": "release", "id": "ip:1.2.3.4"}, "not a containment id"),
])
def test_malformed_contain_commands_are_refused_in_one_line(raw, why):
    with pytest.raises(ContainRefused) as e:
        parse_command(raw)
    assert why in str(e.value) and "\n" not in str(e.value)


def test_a_pid_is_contained_with_its_executable_unless_asked_not_to():
    cmd = parse_command({"action": "contain", "pid": 4242, "exe": "/tmp/./x/scanner"})
    assert cmd.by_exe and cmd.exe == "/tmp/x/scanner" and cmd.ids() == ["pid:4242", "exe:/tmp/x/scanner"]
    assert parse_command({"action": "contain", "pid": 4242, "by_exe": False}).ids() == ["pid:4242"]
    assert parse_command({"action": "release", "id": "exe:/usr/bin/nmap"}).ids() == ["exe:/usr/bin/nmap"]


def test_default_action_contains_a_local_actor_and_bans_known_bad_destinations():
    local = {"category": "port_scan", "event": {"pid": 4242, "exe": "/usr/bin/nmap"}}
    assert threats.default_action(local) == "contain"
    assert threats.default_action({**local, "category": "known_bad_destination"}) == "ban"
    assert threats.default_action({"kind": "flood", "event": {"src": "203.0.113.9"}}) == "ban"
    assert threats.local_actor({"event": {"pid": "4242"}}) is None


# --------------------------------------------------------------------- Review
def test_review_contains_the_process_and_decides(env):
    records, _ = env
    seed(records)
    at = start("Review")
    assert at.button(key="contain_seedcrit0001").proto.type == "primary"
    assert at.button(key="approve_seedcrit0001").proto.type == "secondary"
    at.selectbox(key="ttl_seedcrit0001").set_value("24 hours")
    at.button(key="contain_seedcrit0001").click().run()
    assert not at.exception
    cmds = read(records / CONTAIN_COMMANDS)
    assert len(cmds) == 1
    c = cmds[0]
    assert (c["action"], c["pid"], c["exe"], c["by_exe"], c["ttl_seconds"]) == \
        ("contain", 4242, "/usr/bin/python3.11", True, 86400)
    assert c["source"] == "review:seedcrit0001" and c["threat_id"] == "seedcrit0001" and "signal" not in c
    assert not (records / BAN_COMMANDS).exists(), "containing bans nobody"
    t = next(t for t in read(records / PENDING_THREATS) if t["id"] == "seedcrit0001")
    assert t["status"] == "approved" and t["contain_command"]["pid"] == 4242
    assert "containment of pid 4242 and its executable queued" in texts(at, "success")


def test_stopping_the_process_needs_its_confirmation(env):
    records, _ = env
    seed(records)
    at = start("Review")
    at.selectbox(key="review_open").set_value("seedhigh0003").run()  # one card at a time
    at.selectbox(key="stop_seedhigh0003").set_value("SIGKILL")
    at.button(key="contain_seedhigh0003").click().run()
    assert "tick the confirmation box" in texts(at, "error")
    assert not (records / CONTAIN_COMMANDS).exists()
    at.selectbox(key="stop_seedhigh0003").set_value("SIGKILL")
    at.checkbox(key="stopok_seedhigh0003").check()
    at.checkbox(key="proconly_seedhigh0003").check()
    at.button(key="contain_seedhigh0003").click().run()
    assert not at.exception
    c, = read(records / CONTAIN_COMMANDS)
    assert (c["pid"], c["signal"], c["by_exe"]) == (4242, "KILL", False)


def test_ctl_queues_checked_contain_commands(tmp_path):
    records = tmp_path / "records"
    RecordsStore(records)

    def ctl(*args):
        return subprocess.run([sys.executable, "-m", "netsentinel", "--records", str(records), "contain",
                               *args], capture_output=True, text=True, timeout=60)
    r = ctl("add", "--pid", "4242", "--exe", "/usr/bin/nmap", "--ttl", "2h", "--reason", "scan")
    assert r.returncode == 0 and "queued contain pid:4242, exe:/usr/bin/nmap" in r.stdout, r.stderr
    r = ctl("add", "--pid", "1")
    assert r.returncode == 2 and "init" in r.stderr and "nothing queued" in r.stderr
    assert ctl("release", "pid:4242").returncode == 0
    cmds = json.loads((records / CONTAIN_COMMANDS).read_text())
    assert [(c["action"], c.get("pid"), c.get("id"), c.get("ttl_seconds")) for c in cmds] == \
        [("contain", 4242, None, 7200), ("release", None, "pid:4242", None)]
    (records / "contained.json").write_text(json.dumps({"pid:4242": {
        "kind": "pid", "pid": 4242, "exe": "/usr/bin/nmap", "reason": "scan", "blocked": 7,
        "contained_at": "2026-01-01T00:00:00Z", "expires_at": None}}))
    r = ctl("list")
    assert r.returncode == 0 and "pid:4242" in r.stdout and "/usr/bin/nmap" in r.stdout and "never" in r.stdout
