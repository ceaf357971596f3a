"""Process containment in the lab (issue 12): a contained process, run by a
real unprivileged user from a copy of python3 (so the real /usr/bin/python3
is another executable), gets EPERM on connect() and sendto() while another
process reaches the same destination; its fork()ed child and a new run of
the same binary are contained too; a contained root process cannot open a
raw socket; release lifts it; the pinned maps and tracepoint links keep it
(and end a TTL) while no loader runs; a restarted loader restores it;
--unload removes it all.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess

import pytest

from contain_support import (EPERM, Victim, contain_event, contained_pids, ctl, once, port, queue,  # noqa: F401
                             scanner, start, user)
from netlab import (lab,  # noqa: F401  (module-scoped fixture)
                    kernel_test_skip_reason, ns_connect, read_json, validate, wait_until)
from netsentinel import threats
from netsentinel.abi import ENFORCER_CONTAIN
from netsentinel.store import RecordsStore

SKIP = kernel_test_skip_reason()
pytestmark = pytest.mark.skipif(SKIP is not None, reason=str(SKIP))


def test_contained_process_child_and_rerun_refused_others_connect(lab, start, tmp_path, user, scanner,
                                                                  port):
    lp = start()
    v = Victim(lab, scanner, port, user)
    try:
        assert v("connect") == 0 and v("sendto") == 0, "before containment the process reaches the peer"
        queue(tmp_path, {"action": "contain", "pid": v.pid, "exe": scanner, "ttl_seconds": 600,
                         "reason": "outbound port scan", "source": "test"})
        contain_event(lp, f"pid:{v.pid}", "applied")
        contain_event(lp, f"exe:{scanner}", "applied")
        assert v("connect") == EPERM
        assert v("sendto") == EPERM
        assert v("fork") == EPERM, "a fork()ed child of a contained process is contained"
        assert once(lab, scanner, port, user=user) == EPERM, "a new run of the same binary is contained"
        assert ns_connect(lab, lab.peer4, port)["errno"] == 0, "another process still connects"
        # connect + sendto on the process's entry, the new run's on the executable's.
        rec = wait_until(lambda: (r := read_json(tmp_path / "contained.json") or {})
                         and r[f"pid:{v.pid}"]["blocked"] >= 2 and r[f"exe:{scanner}"]["blocked"] >= 1
                         and r, 10, what="refusals counted in contained.json")
        assert rec[f"pid:{v.pid}"]["exe"] == scanner
        assert rec[f"pid:{v.pid}"]["expires_at"] is not None

        queue(tmp_path, {"action": "release", "id": f"pid:{v.pid}"}, {"action": "release",
                                                                     "id": f"exe:{scanner}"})
        contain_event(lp, f"pid:{v.pid}", "released")
        contain_event(lp, f"exe:{scanner}", "released")
        assert v("connect") == 0 and v("fork") == 0 and once(lab, scanner, port, user=user) == 0
        assert read_json(tmp_path / "contained.json") == {}
    finally:
        v.close()


def test_contained_root_process_gets_no_raw_socket_and_ends_with_its_process(lab, start, tmp_path,
                                                                           scanner, port):
    lp = start()
    v = Victim(lab, scanner, port)   # root: raw sockets are its to open
    try:
        assert v("raw") == 0
        r = ctl(tmp_path, "add", "--pid", str(v.pid), "--process-only", "--reason", "raw SYN scan")
        assert r.returncode == 0, r.stderr
        contain_event(lp, f"pid:{v.pid}", "applied")
        assert v("raw") == EPERM and v("connect") == EPERM
        assert once(lab, scanner, port) == 0, "--process-only: another run of the binary is free"
        assert f"pid:{v.pid}" in ctl(tmp_path, "list").stdout
    finally:
        v.close()
    contain_event(lp, f"pid:{v.pid}", "exited")
    assert read_json(tmp_path / "contained.json") == {}


def test_review_contains_and_stops_the_threats_process(lab, start, tmp_path, scanner, port):
    """What Review's "Contain process" does (threats.contain), through the loader."""
    lp = start()
    v = Victim(lab, scanner, port)
    store = RecordsStore(tmp_path)
    try:
        (t, _), = threats.add_or_merge_many(store, [({
            "level": "CRITICAL", "category": "port_scan", "reason": "40 ports on the peer",
            "confidence": 0.9, "target": lab.peer4, "dedupe_key": f"proc|{scanner}",
            "event": {"pid": v.pid, "exe": scanner, "comm": "scanner", "uid": 0, "daddr": lab.peer4}}, 1)])
        assert threats.default_action(t) == "contain"
        threats.contain(store, t["id"], by="test", ttl_seconds=3600, stop="KILL")
        ev = contain_event(lp, f"pid:{v.pid}", "applied")
        assert ev["source"] == f"review:{t['id']}"
        contain_event(lp, f"exe:{scanner}", "applied")
        assert v.proc.wait(timeout=10) != 0, "SIGKILL after containment"
        assert once(lab, scanner, port) == EPERM, "its executable stays contained"
        contain_event(lp, f"pid:{v.pid}", "exited")
        assert list(read_json(tmp_path / "contained.json")) == [f"exe:{scanner}"]
    finally:
        v.close()


def test_refusals_are_recorded_and_a_hostile_record_file_is_survived(lab, start, tmp_path):
    (tmp_path / "contained.json").write_text(json.dumps({
        "weird": 5, "pid:x": {"kind": "pid", "pid": "x"}, "exe:/nope": {"kind": "exe", "dev": "a"},
        "pid:4000000": {"kind": "pid", "pid": 4000000}}))   # no start time: never trusted as alive
    lp = start()
    assert read_json(tmp_path / "contained.json") == {}
    sleeper = subprocess.Popen(["sleep", "300"])
    try:
        queue(tmp_path, {"action": "contain", "pid": 1}, {"action": "contain", "exe": "/bin/bash"},
              {"action": "contain", "pid": "all"},
              {"action": "contain", "pid": sleeper.pid, "exe": "/usr/bin/not-this"},
              {"action": "contain", "pid": os.getpid()})
        for _ in range(5):
            validate(lp.wait_for(lambda e: e["type"] == "contain_rejected", 10, "contain_rejected"))
    finally:
        sleeper.kill()
        sleeper.wait()
    rejected = wait_until(lambda: len(r := read_json(tmp_path / "contain_commands.rejected.json") or [])
                          == 5 and r, 10, what="5 refusals recorded")
    errors = [r["error"] for r in rejected]
    assert "init" in errors[0] and "shared by every user" in errors[1] and "pid must be" in errors[2]
    assert "pid was reused" in errors[3] and "this loader or one of its parents" in errors[4]
    assert read_json(tmp_path / "contained.json") == {}


def test_containment_outlives_the_loader_ttl_ends_without_it_and_unload_removes_it(lab, start, tmp_path,
                                                                                  user, scanner, port):
    lp = start()
    assert set(ENFORCER_CONTAIN) <= set(read_json(tmp_path / "loader_status.json")["programs"])
    v = Victim(lab, scanner, port, user)
    try:
        queue(tmp_path, {"action": "contain", "pid": v.pid, "by_exe": False, "reason": "keep"},
              {"action": "contain", "exe": scanner, "ttl_seconds": 6, "reason": "short"})
        contain_event(lp, f"pid:{v.pid}", "applied")
        contain_event(lp, f"exe:{scanner}", "applied")
        assert lp.stop() == 0
        # No loader: the pinned maps refuse, the pinned fork tracepoint follows.
        assert v("connect") == EPERM and v("fork") == EPERM
        assert once(lab, scanner, port, user=user) == EPERM
        # The executable's TTL ends in the kernel, loader or not.
        wait_until(lambda: once(lab, scanner, port, user=user) == 0, 30,
                   what="the executable's containment to expire with no loader")
        assert v("connect") == EPERM, "the process's own entry has no TTL"

        lp2 = start()
        contain_event(lp2, f"pid:{v.pid}", "restored")
        contain_event(lp2, f"exe:{scanner}", "expired")
        assert list(read_json(tmp_path / "contained.json")) == [f"pid:{v.pid}"]
        assert v("connect") == EPERM
        assert set(lp2.all_events[0]["links_adopted"]) >= set(ENFORCER_CONTAIN)
        assert lp2.stop() == 0
        r = lab.unload()
        assert r.returncode == 0, r.stderr
        assert v("connect") == 0 and v("fork") == 0, "--unload removes containment"
    finally:
        v.close()


def test_children_of_a_contained_executable_follow_it_through_exec_and_go_with_its_release(
        lab, start, tmp_path, scanner, port):
    lp = start()
    v = Victim(lab, scanner, port)
    sleeper = None
    try:
        assert v("exec") == 0
        queue(tmp_path, {"action": "contain", "exe": scanner, "reason": "miner"})
        contain_event(lp, f"exe:{scanner}", "applied")
        assert v("connect") == EPERM, "a process already running the file is contained"
        assert v("exec") == EPERM, "its child running /usr/bin/python3 is contained (forked under it)"
        assert ns_connect(lab, lab.peer4, port)["errno"] == 0, "/usr/bin/python3 itself is not"
        sleeper = v("sleeper")
        tags = contained_pids(lab)
        assert sleeper in tags and tags[sleeper] >= 0x80000000, tags   # origin: the executable's tag
        rec = wait_until(lambda: (read_json(tmp_path / "contained.json") or {}).get(f"exe:{scanner}", {})
                         .get("children"), 10, what="the child counted")
        assert rec >= 1
        queue(tmp_path, {"action": "release", "exe": scanner})
        contain_event(lp, f"exe:{scanner}", "released")
        assert sleeper not in contained_pids(lab), "released with the executable"
        assert v("connect") == 0 and v("exec") == 0
    finally:
        if sleeper:
            os.kill(sleeper, signal.SIGKILL)
        v.close()


def test_a_connection_opened_before_containment_is_cut(lab, start, tmp_path, scanner, port):
    """The reverse-shell case: containing stops new connections, and the
    packets of the one it already has are dropped both ways."""
    lp = start()
    v = Victim(lab, scanner, port)
    try:
        assert v("hold") == 0 and v("send") == 0
        queue(tmp_path, {"action": "contain", "pid": v.pid, "by_exe": False, "reason": "reverse shell"})
        contain_event(lp, f"pid:{v.pid}", "applied")
        assert read_json(tmp_path / "contained.json")[f"pid:{v.pid}"]["sockets_cut"] >= 1
        assert v("send") != 0, "no echo over the held connection"
        # The refusal is the kernel's: its drop counted on the socket's entry.
        wait_until(lambda: (read_json(tmp_path / "contained.json") or {}).get(f"pid:{v.pid}", {})
                   .get("blocked", 0) >= 1, 10, what="the held connection's packets counted as dropped")
        queue(tmp_path, {"action": "release", "pid": v.pid})
        contain_event(lp, f"pid:{v.pid}", "released")
        assert v("connect") == 0
    finally:
        v.close()
