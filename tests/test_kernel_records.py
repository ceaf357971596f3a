"""Nothing in records/ can stop enforcement (issue 10, records side; issue 11):
poison commands, lock fights by a real unprivileged user, a second loader,
10,000 dropped commands, and a loader killed half-way through them. A banned
lab peer keeps pinging; what gets through is counted.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from netlab import (lab,  # noqa: F401  (module-scoped fixture)
                    LoaderProc, LoaderStarter, ban_event, kernel_test_skip_reason, read_json, validate, wait_until,
                    write_commands)
from netsentinel import dropdir
from netsentinel.netinfo import PROTECTED_TTL_S  # how long the host's addresses are cached
from poison import INVALID_BANS, POISON_RULES, UNPARSEABLE_BANS

SKIP = kernel_test_skip_reason() or (None if shutil.which("useradd") else "useradd is missing")
pytestmark = pytest.mark.skipif(SKIP is not None, reason=str(SKIP))
ATTACK_S = 60  # the brief: an unprivileged user fighting for the lock for a minute


@pytest.fixture
def records():
    """A root-owned records directory every user may search (an attacker
    must at least be able to reach the lock files to try them)."""
    parent = Path(tempfile.mkdtemp(prefix="netsentinel-h2-"))
    parent.chmod(0o755)
    (parent / "rec").mkdir(mode=0o755)
    (parent / "filter_config.json").write_text("{}")
    yield parent / "rec"
    shutil.rmtree(parent, ignore_errors=True)


@pytest.fixture
def fresh(lab, records):
    with LoaderStarter(lab, records, records.parent / "filter_config.json") as start:
        yield start


@pytest.fixture
def attacker():
    name = f"nsh2-{os.urandom(3).hex()}"
    subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin",
                    name], check=True)
    yield name
    wait_until(lambda: subprocess.run(["userdel", name], capture_output=True).returncode == 0,
               timeout=10, what=f"userdel {name}")


def blocked(lab) -> bool:
    return not lab.ping(lab.peer, lab.dut4)


def lab_addresses(lab, n: int) -> list[str]:
    """n addresses of our own lab octet, none of them the lab's own subnet."""
    o = lab.dut4.split(".")[1]
    nets = [x for x in range(1, 251) if x != lab.n]
    return [f"10.{o}.{nets[i // 250]}.{i % 250 + 1}" for i in range(n)]


def rejected(records: Path, name="ban_commands.rejected.json") -> list:
    return read_json(records / name, []) or []


# ----------------------------------------------------------------- poison

POISON_BANS = UNPARSEABLE_BANS + INVALID_BANS


def test_poison_commands_are_refused_once_and_enforcement_goes_on(lab, fresh, records):
    lp = fresh()
    write_commands(records, [{"action": "ban", "ip": lab.peer4, "reason": "keep dropping"}])
    ban_event(lp, lab.peer4)
    assert blocked(lab)
    for name, poison in (("ban_commands", POISON_BANS), ("rule_commands", POISON_RULES)):
        for i, text in enumerate(poison):
            (records / f"{name}.json").write_text(text)
            wait_until(lambda: len(rejected(records, f"{name}.rejected.json")) == i + 1, 10,
                       what=f"{name} poison {i} refused")
            assert lp.proc.poll() is None, f"loader died on {name} poison {i}"
    assert blocked(lab), "the ban stopped dropping"
    assert lp.stop() == 0
    counts = {n: len(rejected(records, f"{n}.rejected.json")) for n in ("ban_commands", "rule_commands")}
    assert counts == {"ban_commands": len(POISON_BANS), "rule_commands": len(POISON_RULES)}
    assert all("\n" not in e["error"] for e in rejected(records))
    # Nothing stays queued to crash the next start, and nothing is refused twice.
    lp2 = fresh()
    ban_event(lp2, lab.peer4, result="restored")
    assert blocked(lab)
    write_commands(records, [{"action": "ban", "ip": lab.peer4b}])
    ban_event(lp2, lab.peer4b)
    assert {n: len(rejected(records, f"{n}.rejected.json")) for n in counts} == counts


def test_rule_expiring_after_the_host_gained_a_covered_address_does_not_crash(lab, fresh,
                                                                              records):
    """Rule a drops everything from a prefix; rule b expires. Meanwhile the
    host took an address in a's prefix, so the set without b is refused as a
    whole: b must still go, a is refused with the reason, the loader lives."""
    net = lab_addresses(lab, 251)[250].rsplit(".", 1)[0]  # a /24 of ours the lab does not use
    prefix, own = f"{net}.0/24", f"{net}.7"
    lp = fresh()
    (records / "rule_commands.json").write_text(json.dumps([
        {"action": "add_rule", "rule": {"id": "a", "action": "drop", "src": prefix}},
        {"action": "add_rule", "rule": {"id": "b", "action": "drop", "proto": "udp", "sport": 9,
                                        "ttl_seconds": PROTECTED_TTL_S + 3}}]))
    for rid in ("a", "b"):
        lp.wait_for(lambda e: e["type"] == "rule" and e.get("id") == rid, 10, f"rule {rid}")
    lab.ns_exec(lab.dut, "ip", "addr", "add", f"{own}/32", "dev", lab.dut_if, check=True)
    try:
        lp.wait_for(lambda e: e["type"] == "rule" and e.get("id") == "b"
                    and e.get("result") == "expired", 20, "rule b expired")
        (entry,) = rejected(records, "rule_commands.rejected.json")
        assert entry["command"]["rule"]["id"] == "a" and own in entry["error"]
        wait_until(lambda: read_json(records / "filter_rules.json")["rules"] == [], 5,
                   what="filter_rules.json saved without a and b")
        assert lp.proc.poll() is None
    finally:
        lab.ns_exec(lab.dut, "ip", "addr", "del", f"{own}/32", "dev", lab.dut_if)


# ----------------------------------------------------------------- locks

ATTACK = """
import fcntl, os, sys, time
lock, loader_lock, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
held = deleted = tries = 0
end = time.monotonic() + seconds
while time.monotonic() < end:
    for path in (lock, loader_lock):
        tries += 1
        try:
            fd = os.open(path, os.O_RDONLY)
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            held += 1
        except OSError:
            pass
        try:
            os.unlink(path)
            deleted += 1
        except OSError:
            pass
        try:
            os.rename(path, path + ".x")
            deleted += 1
        except OSError:
            pass
    time.sleep(0.01)
print(tries, held, deleted, flush=True)
"""

HOLD_AS_ROOT = """
import sys
from netsentinel.store import RecordsStore
with RecordsStore(sys.argv[1]).locked():
    print("holding", flush=True)
    sys.stdin.readline()
"""


def test_unprivileged_user_fighting_the_lock_for_a_minute_changes_nothing(lab, fresh, records,
                                                                          attacker):
    lp = fresh()
    write_commands(records, [{"action": "ban", "ip": lab.peer4}])
    ban_event(lp, lab.peer4)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    attack = subprocess.Popen(["runuser", "-u", attacker, "--", sys.executable, "-c", ATTACK,
                               str(records / ".lock"), str(records / ".loader.lock"), str(ATTACK_S)],
                              stdout=subprocess.PIPE, text=True, env=env, cwd="/",
                              start_new_session=True)
    # Meanwhile bans keep coming in and being applied, and the banned peer stays dropped.
    ips = lab_addresses(lab, 5)
    for ip in ips:
        write_commands(records, [{"action": "ban", "ip": ip}])
        ban_event(lp, ip)
        assert blocked(lab)
    tries, held, deleted = map(int, attack.communicate(timeout=ATTACK_S + 30)[0].split())
    assert tries > 0 and (held, deleted) == (0, 0)
    assert lp.proc.poll() is None and blocked(lab)
    assert set(ips) <= set(read_json(records / "banned_ips.json"))


def test_lock_held_past_the_wait_is_reported_and_the_loader_goes_on(lab, fresh, records):
    """A writer (root) keeps records/ locked far past the loader's wait:
    the loader says so (stderr, loader_status.json), keeps enforcing, and
    applies what was queued meanwhile once the lock is free."""
    lp = fresh()
    write_commands(records, [{"action": "ban", "ip": lab.peer4}])
    ban_event(lp, lab.peer4)
    holder = subprocess.Popen([sys.executable, "-c", HOLD_AS_ROOT, str(records)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "holding"
        write_commands(records, [{"action": "ban", "ip": lab.peer4b}])
        status = wait_until(lambda: (read_json(records / "loader_status.json") or {}).get(
            "records_error"), 20, what="records_error in loader_status.json")
        assert "timed out" in status and "retrying" in status
        assert any("records/ unusable, retrying" in ln for ln in lp.stderr_lines)
        assert lp.proc.poll() is None and blocked(lab)
    finally:
        holder.communicate("go\n", timeout=10)
    ban_event(lp, lab.peer4b, timeout=15)
    wait_until(lambda: (read_json(records / "loader_status.json") or {}).get("records_error",
                                                                              "x") is None,
               10, what="records_error cleared")
    assert any("records/ usable again" in ln for ln in lp.stderr_lines)


APPEND = """
import sys
from netsentinel.store import RecordsStore
store = RecordsStore(sys.argv[1], lock_timeout=600)  # 50 writers on 2 busy cores queue up
for ip in sys.argv[2:]:
    store.append_command({"action": "ban", "ip": ip, "source": "writer"})
"""


def test_fifty_writers_through_the_store_api_all_applied_loader_alive(lab, fresh, records):
    """What killed the loader once in two runs (its lock timed out)."""
    lp = fresh()
    ips = lab_addresses(lab, 10_000)
    writers = [subprocess.Popen([sys.executable, "-c", APPEND, str(records),
                                 *ips[w * 200:(w + 1) * 200]]) for w in range(50)]
    for w in writers:
        assert w.wait(timeout=600) == 0
    wait_until(lambda: len(_banned(records)) >= 10_000, 300, interval=0.5, what="10,000 bans")
    assert set(_banned(records)) == set(ips) and rejected(records) == []
    assert lp.proc.poll() is None


def test_second_loader_on_the_same_records_is_refused_with_the_first_pid(lab, fresh, records):
    lp = fresh()
    second = LoaderProc(lab, records, records.parent / "filter_config.json", "--no-xdp", echo=False)
    assert second.proc.wait(timeout=60) != 0
    wait_until(lambda: second.stderr_lines, 5, what="the second loader's message")
    msg = " ".join(second.stderr_lines)
    assert f"another loader (pid {lp.proc.pid})" in msg, msg  # ip netns exec execs: same pid
    assert lp.proc.poll() is None


# ----------------------------------------------------------------- volume and crashes

def _drop(records: Path, commands: list[dict]) -> None:
    d = dropdir.ensure(records, "ban_commands.json")
    for cmd in commands:
        dropdir.submit(records, d.name, cmd)


def _banned(records: Path) -> dict:
    try:
        return json.loads((records / "banned_ips.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def test_ten_thousand_dropped_commands_all_applied(lab, fresh, records):
    lp = fresh()
    ips = lab_addresses(lab, 10_000)
    _drop(records, [{"action": "ban", "ip": ip, "source": "script"} for ip in ips])
    wait_until(lambda: not list((records / "ban_commands.d").iterdir()), 180, interval=0.5,
               what="the drop directory consumed")
    assert set(_banned(records)) == set(ips)
    assert rejected(records) == []
    wait_until(lambda: (read_json(records / "loader_status.json") or {}).get("stats", {}).get(
        "bans_active") == 10_000, 10, what="10,000 bans in the kernel")
    assert lp.proc.poll() is None


def test_loader_killed_half_way_through_ten_thousand_bans_loses_and_duplicates_none(
        lab, fresh, records):
    ips = lab_addresses(lab, 10_000)
    _drop(records, [{"action": "ban", "ip": ip} for ip in ips])
    lp = fresh()
    wait_until(lambda: 0 < len(_banned(records)) < 10_000, 120, interval=0.01,
               what="the loader part-way through")
    lp.proc.send_signal(signal.SIGKILL)
    lp.proc.wait()
    part = len(_banned(records))
    lp2 = fresh()
    wait_until(lambda: not list((records / "ban_commands.d").iterdir()), 180, interval=0.5,
               what="the drop directory consumed")
    text = (records / "banned_ips.json").read_text()
    assert sum(text.count(f'"{ip}":') for ip in ips[:50]) == 50, "a ban written twice"
    assert set(_banned(records)) == set(ips) and 0 < part < 10_000
    assert list((records / "ban_commands.d").iterdir()) == [] and rejected(records) == []
    wait_until(lambda: (read_json(records / "loader_status.json") or {}).get("stats", {}).get(
        "bans_active") == 10_000, 10, what="10,000 bans in the kernel")
    assert lp2.proc.poll() is None


def test_fifty_shells_writing_the_command_file_every_command_applied_or_reported(
        lab, fresh, records):
    lp = fresh()
    ips = lab_addresses(lab, 10_000)
    target = records / "ban_commands.json"
    procs = []
    for w in range(50):
        lines = "".join(f"echo '[{{\"action\": \"ban\", \"ip\": \"{ip}\"}}]' {redir} {target}\n"
                        for ip, redir in zip(ips[w * 200:(w + 1) * 200], [">"] * 200))
        procs.append(subprocess.Popen(["sh", "-c", lines]))
    for p in procs:
        assert p.wait(timeout=300) == 0

    def accounted():
        lost = sum(e["command"].get("lost_writes", 0) for e in rejected(records)
                   if isinstance(e.get("command"), dict))
        return len(set(_banned(records)) & set(ips)), lost
    fan = (read_json(records / "loader_status.json") or {}).get("command_files")
    if fan and fan["serialised"]:
        wait_until(lambda: not target.read_text().strip("[]\n ") and not any(
            (records / "ban_commands.d").iterdir()), 120, interval=0.5, what="all sessions applied")
        fan = wait_until(lambda: (f := read_json(records / "loader_status.json")["command_files"])
                         ["sessions"] >= 10_000 and f, 10, what="the sessions in loader_status.json")
        applied, lost = accounted()
        # One writer session at a time (loader/cmdfan.py): nothing is replaced
        # before the loader has it, so every command is applied, once.
        assert (applied, lost) == (10_000, 0), (applied, lost, fan)
        assert fan["sessions"] >= 10_000 and fan["held_too_long"] == 0 and not fan["failed"], fan
    else:
        wait_until(lambda: (time.sleep(0.5), not (target.read_text().strip("[]\n ")))[1], 60,
                   what="the command file consumed")
        applied, lost = accounted()
        # Without fanotify (loader/cmdwatch.py): a write replaced by the next
        # `>` before the loader read it is gone, and counted (inotify may count
        # low, never high). Measured 99.85-99.96% accounted for here; the rest
        # are two closes racing on two CPUs, which inotify merges on both watches.
        assert applied + lost <= 10_000 and lost > 0
        assert applied + lost >= 0.99 * 10_000, (applied, lost)
    assert lp.proc.poll() is None
