"""Enforcement never fails open (issue 10, kernel side), measured in the lab.

A banned peer sends UDP to the host under test at a fixed rate for the whole
test while a receiver there counts what gets through: across a loader
SIGKILL + restart, SIGTERM + restart and an upgrade that changes the program,
nothing may arrive. A TTL ban ends on time while no loader runs. --unload
leaves nothing; a second loader on the same interface is refused at once.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import time
from pathlib import Path

import pytest

from netlab import (lab,  # noqa: F401  (module-scoped fixture)
                    ROOT, VENV_PY, LoaderProc, ban_event, kernel_test_skip_reason, sh, unload_all,
                    validate, wait_until, write_commands)
from netsentinel.abi import ENFORCER_CGROUP, ENFORCER_XDP
from netsentinel.kernel.pins import LoaderLock, PinDir
from netsentinel.store import parse_iso

SKIP = kernel_test_skip_reason()
pytestmark = pytest.mark.skipif(SKIP is not None, reason=str(SKIP))

LINKS = {ENFORCER_XDP, *ENFORCER_CGROUP}

# Counts datagrams; after each one, "<count> <unix time of the first>" into argv[2].
RECEIVER = """
import os, socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", int(sys.argv[1])))
out, n, first = sys.argv[2], 0, None
open(out + ".ready", "w").close()
while True:
    s.recvfrom(64)
    n += 1
    first = first or time.time()
    with open(out + ".tmp", "w") as f:
        f.write(f"{n} {first}")
    os.replace(out + ".tmp", out)
"""

# About 1000 datagrams a second from argv[1]; the running count into argv[4].
SENDER = """
import os, socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], 0))
dst, out, n, due = (sys.argv[2], int(sys.argv[3])), sys.argv[4], 0, time.monotonic()
while True:
    s.sendto(b"banned?", dst)
    n += 1
    if n % 50 == 0:
        with open(out + ".tmp", "w") as f:
            f.write(str(n))
        os.replace(out + ".tmp", out)
    due += 0.001
    time.sleep(max(0.0, due - time.monotonic()))
"""


class Traffic:
    """The banned peer sending, the host under test counting arrivals."""

    def __init__(self, lab, d: Path):
        self.rx, self.tx = d / "received", d / "sent"
        port = str(40000 + lab.n)
        self.procs = [subprocess.Popen(["ip", "netns", "exec", lab.dut, "/usr/bin/python3", "-c",
                                        RECEIVER, port, str(self.rx)])]
        wait_until(lambda: Path(str(self.rx) + ".ready").exists(), 10, what="receiver bound")
        self.procs.append(subprocess.Popen(["ip", "netns", "exec", lab.peer, "/usr/bin/python3", "-c",
                                            SENDER, lab.peer4, lab.dut4, port, str(self.tx)]))

    def sent(self) -> int:
        try:
            return int(self.tx.read_text() or 0)
        except FileNotFoundError:
            return 0

    def received(self) -> tuple[int, float | None]:
        try:
            n, first = self.rx.read_text().split()
            return int(n), float(first)
        except FileNotFoundError:
            return 0, None

    def wait_sent(self, more: int) -> int:
        """Wait until `more` further datagrams have left the peer."""
        target = self.sent() + more
        return wait_until(lambda: self.sent() >= target and self.sent(), 30,
                          what=f"{more} more datagrams sent")

    def alive(self) -> bool:
        return all(p.poll() is None for p in self.procs)

    def stop(self) -> None:
        for p in self.procs:
            p.kill()
            p.wait()


@pytest.fixture
def run(lab, tmp_path):
    """start(*flags) → a started LoaderProc on one records dir; teardown
    stops the sender, every loader, and unloads (leaving nothing)."""
    cfg = tmp_path / "filter_config.json"
    cfg.write_text("{}")
    state = {"loaders": [], "traffic": None}

    def start(*extra, records: Path = tmp_path, interface: str | None = None):
        lp = LoaderProc(lab, records, cfg, *extra, interface=interface)
        state["loaders"].append(lp)
        validate(lp.wait_started())
        return lp

    def traffic():
        state["traffic"] = Traffic(lab, tmp_path)
        return state["traffic"]
    start.traffic = traffic
    yield start
    if state["traffic"]:
        state["traffic"].stop()
    for lp in state["loaders"]:
        if lp.proc.poll() is None:
            lp.stop()
    unload_all(lab)


def test_nothing_gets_through_crash_restart_and_upgrade(lab, run, tmp_path):
    lp = run()
    write_commands(tmp_path, [{"action": "ban", "ip": lab.peer4, "reason": "persist"}])
    ban_event(lp, lab.peer4, result="applied")
    t = run.traffic()
    t.wait_sent(300)

    lp.stop(signal.SIGKILL)                       # crash, then a normal start
    t.wait_sent(300)
    lp2 = run()
    start = lp2.all_events[0]
    assert set(start["links_adopted"]) == LINKS and start["links_replaced"] == []
    assert start["bans_restored"] == 1
    t.wait_sent(300)

    assert lp2.stop(signal.SIGTERM) == 0          # plain stop, then start
    t.wait_sent(300)
    before = pinned_link(lab, ENFORCER_XDP)
    lp3 = run("--test-define", "NS_TEST_UPGRADE=1")   # a changed program: replaced through the links
    start = lp3.all_events[0]
    assert set(start["links_adopted"]) == LINKS and set(start["links_replaced"]) == LINKS
    after = pinned_link(lab, ENFORCER_XDP)
    assert after["id"] == before["id"] and after["prog_id"] != before["prog_id"], \
        "the program must change inside the same link, never by detach and attach"
    assert any("replaced through the pinned links" in line for line in lp3.stderr_lines)
    t.wait_sent(300)
    assert lp3.stop(signal.SIGINT) == 0
    t.wait_sent(300)

    sent = t.sent()
    assert t.alive() and sent >= 2100
    assert t.received() == (0, None), f"{t.received()[0]} of {sent} banned datagrams got through"
    # The receiver does count: with everything unloaded the same traffic arrives.
    unload_all(lab)
    wait_until(lambda: t.received()[0] > 0, 10, what="datagrams once unloaded")


def test_ttl_ban_ends_on_time_while_no_loader_runs(lab, run, tmp_path):
    lp = run()
    write_commands(tmp_path, [{"action": "ban", "ip": lab.peer4, "ttl_seconds": 10}])
    expires_at = parse_iso(ban_event(lp, lab.peer4, result="applied")["expires_at"])
    assert lp.stop() == 0
    t = run.traffic()
    t.wait_sent(300)
    assert time.time() < expires_at, "the loader took longer to stop than the TTL: nothing measured"
    assert t.received() == (0, None)
    n, first = wait_until(lambda: (t.received()[0] or not t.alive()) and t.received(),
                          expires_at - time.time() + 20, what="the ban to expire with no loader running")
    assert t.alive(), "the sender or receiver died"
    # Not before its time (0.25 s: converting Unix time to CLOCK_BOOTTIME).
    assert first >= expires_at - 0.25, f"ban ended {expires_at - first:.2f} s early"
    assert lp.proc.poll() is not None
    # The next loader deletes the expired entry from the kernel map and the record.
    lp2 = run()
    ban_event(lp2, lab.peer4, type_="unban", result="expired")
    dump = sh("bpftool", "-j", "map", "dump", "pinned", f"{lab.pin_root}/{lab.dut_if}/bans4").stdout
    assert json.loads(dump) == []


def test_second_loader_is_refused_and_unload_waits_for_the_first(lab, run, tmp_path):
    lp = run()
    other = tmp_path / "other"
    other.mkdir()
    second = LoaderProc(lab, other, tmp_path / "filter_config.json", echo=False)
    assert second.proc.wait(timeout=60) == 1
    err = "\n".join(second.stderr_lines)
    assert f"another loader (pid {lp.proc.pid})" in err and f"sudo kill {lp.proc.pid}" in err
    assert not second.all_events, "a refused loader wrote events"
    assert not (other / "loader_status.json").exists()
    # The same interface under another pin directory is the same interface.
    third = LoaderProc(lab, other, tmp_path / "filter_config.json", "--pin-dir",
                       f"{lab.pin_root}/elsewhere", echo=False)
    assert third.proc.wait(timeout=60) == 1
    assert f"another loader (pid {lp.proc.pid})" in "\n".join(third.stderr_lines)
    assert not os.path.exists(f"{lab.pin_root}/elsewhere")
    r = lab.unload()
    assert r.returncode == 1 and f"pid {lp.proc.pid}" in r.stderr
    assert lp.proc.poll() is None and lab.xdp_attached()
    # The lock is root's alone: an unprivileged user cannot even open it.
    lock = LoaderLock(PinDir(lab.pin_root, lab.dut_if)).path
    st = os.stat(lock)
    assert st.st_uid == 0 and stat.S_IMODE(st.st_mode) == 0o600
    r = subprocess.run(["runuser", "-u", "nobody", "--", "/usr/bin/python3", "-c",
                        f"open({str(lock)!r}, 'rb')"], capture_output=True, text=True)
    assert r.returncode != 0 and "PermissionError" in r.stderr


def pinned_link(lab, name: str) -> dict:
    """{"id", "prog_id", ...} of one pinned link, as bpftool shows it."""
    path = f"{lab.pin_root}/{lab.dut_if}/link_{name}"
    return json.loads(sh("bpftool", "-j", "link", "show", "pinned", path).stdout)


def pinned_map(lab, name: str) -> list:
    out = sh("bpftool", "-j", "map", "dump", "pinned", f"{lab.pin_root}/{lab.dut_if}/{name}").stdout
    return json.loads(out)


def test_first_start_fills_the_maps_before_any_program_sees_traffic(lab, run, tmp_path):
    """The banned peer is already sending when the loader first starts: had
    XDP run before the saved ban was in its map, the peer would have a row in
    the flow statistics (only packets that pass get one). It never does."""
    (tmp_path / "banned_ips.json").write_text(json.dumps({lab.peer4: {"reason": "saved"}}))
    t = run.traffic()
    t.wait_sent(100)
    assert t.received()[0] > 0                    # nothing enforced yet: it arrives
    lp = run()
    assert lp.all_events[0]["links_adopted"] == [] and lp.all_events[0]["bans_restored"] == 1
    t.wait_sent(500)
    assert lab.ping(lab.peer, lab.dut4, source=lab.peer4b)   # an unbanned source does get a row
    sources = {bytes(int(b, 16) for b in row["key"])[4:8] for row in pinned_map(lab, "flows")}
    assert socket.inet_aton(lab.peer4b) in sources
    assert socket.inet_aton(lab.peer4) not in sources, \
        "packets from the banned peer passed XDP before its ban was in the map"
    bans = pinned_map(lab, "bans4")
    assert len(bans) == 1
    assert not any(e.get("src") == lab.peer4 for e in lp.all_events if e["type"] == "flow")


def test_restart_drops_pinned_bans_the_record_no_longer_lists(lab, run, tmp_path):
    lp = run()
    write_commands(tmp_path, [{"action": "ban", "ip": lab.peer4}])
    ban_event(lp, lab.peer4, result="applied")
    assert lp.stop() == 0
    assert not lab.ping(lab.peer, lab.dut4)
    (tmp_path / "banned_ips.json").write_text("{}\n")   # a person removed it by hand
    lp2 = run()
    assert any(f"removed {lab.peer4} from the pinned ban map" in line for line in lp2.stderr_lines)
    assert lab.ping(lab.peer, lab.dut4)


def test_incompatible_pinned_maps_are_refused_and_left_enforcing(lab, run, tmp_path):
    lp = run()
    write_commands(tmp_path, [{"action": "ban", "ip": lab.peer4}])
    ban_event(lp, lab.peer4, result="applied")
    assert lp.stop() == 0
    other = LoaderProc(lab, tmp_path, tmp_path / "filter_config.json", "--max-bans", "1024", echo=False)
    assert other.proc.wait(timeout=120) == 1
    err = "\n".join(other.stderr_lines)
    assert "pinned map bans4" in err and "--unload" in err and "old enforcement stays up" in err
    assert lab.xdp_attached() and not lab.ping(lab.peer, lab.dut4)


def test_an_expired_ban_never_hides_a_live_broader_one_and_rules_survive(lab, run, tmp_path):
    """With no loader running, peer4's TTL ban ends on time while peer4b's
    expired /32 does not uncover it: the live /25 behind it still drops. A
    drop rule keeps dropping across a crash and an adopting restart."""
    o, n = lab.dut4.split(".")[1:3]
    wide = f"10.{o}.{n}.128/25"                   # holds peer4b (.130), not the dut (.1) or peer4 (.2)
    lp = run()
    write_commands(tmp_path, [{"action": "ban", "ip": wide},
                              {"action": "ban", "ip": lab.peer4b, "ttl_seconds": 4},
                              {"action": "ban", "ip": lab.peer4, "ttl_seconds": 4}])
    ban_event(lp, wide, result="applied")
    ban_event(lp, lab.peer4b, result="applied")
    expires_at = parse_iso(ban_event(lp, lab.peer4, result="applied")["expires_at"])
    (tmp_path / "rule_commands.json").write_text(json.dumps([{"action": "add_rule", "rule": {
        "id": "no-echo-v6", "action": "drop", "proto": "icmpv6", "icmp_type": 128, "src": lab.peer6}}]))
    lp.wait_for(lambda e: e["type"] == "rule" and e.get("id") == "no-echo-v6", 10, "rule loaded")
    wait_until(lambda: "no-echo-v6" in (tmp_path / "filter_rules.json").read_text(), 10,
               what="the rule recorded")
    lp.stop(signal.SIGKILL)
    assert not lab.ping(lab.peer, lab.dut6)
    wait_until(lambda: time.time() > expires_at, expires_at - time.time() + 5, what="the TTL to pass")
    wait_until(lambda: lab.ping(lab.peer, lab.dut4), 10, what="peer4's TTL ban to end")
    assert not lab.ping(lab.peer, lab.dut4, source=lab.peer4b), "an expired /32 uncovered its /25"
    lp2 = run()
    assert set(lp2.all_events[0]["links_adopted"]) == LINKS
    assert not lab.ping(lab.peer, lab.dut6), "the drop rule stopped across the restart"
    assert not lab.ping(lab.peer, lab.dut4, source=lab.peer4b)
    assert lab.ping(lab.peer, lab.dut4)


def test_a_ban_applied_but_not_yet_saved_is_never_dropped_on_restart(lab, run, tmp_path):
    """A crash between putting a ban in the kernel and saving banned_ips.json
    leaves the command queued: the next loader applies it before it drops
    pinned bans the record lacks, so the ban never lapses."""
    lp = run()
    write_commands(tmp_path, [{"action": "ban", "ip": lab.peer4}])
    ban_event(lp, lab.peer4, result="applied")
    wait_until(lambda: not (tmp_path / "ban_commands.json").read_text().strip("[] \n"), 10,
               what="the command consumed")
    assert lp.stop() == 0
    # The state such a crash leaves: in the kernel, still queued, not recorded.
    (tmp_path / "banned_ips.json").write_text("{}\n")
    write_commands(tmp_path, [{"action": "ban", "ip": lab.peer4}])
    t = run.traffic()
    t.wait_sent(200)
    lp2 = run()
    ban_event(lp2, lab.peer4, result="applied")
    t.wait_sent(200)
    assert not any(f"removed {lab.peer4}" in line for line in lp2.stderr_lines)
    assert t.received() == (0, None)


def test_a_local_user_cannot_stop_the_loader_by_taking_its_pin_dir(lab, run, tmp_path):
    """/sys/fs/bpf is often mode 1777. An unprivileged user who creates the
    pin root first (or a symlink there) must not keep enforcement from
    starting: the loader moves it aside, says so, and enforces."""
    shared = f"/run/netsentinel-lab/{lab.dut}-open"
    os.makedirs(shared, exist_ok=True)
    sh("mount", "-t", "bpf", "-o", "mode=1777", "bpf", shared)
    try:
        root = f"{shared}/netsentinel"
        r = subprocess.run(["runuser", "-u", "nobody", "--", "mkdir", "-m", "0777", root],
                           capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        assert os.stat(root).st_uid != 0
        lp = run("--pin-dir", root, "--ban", lab.peer4)
        assert any(f"{root} was owned by uid" in line and "moved aside" in line
                   for line in lp.stderr_lines)
        assert not lab.ping(lab.peer, lab.dut4)
        st = os.stat(root)
        assert st.st_uid == 0 and stat.S_IMODE(st.st_mode) == 0o700
        assert lp.stop() == 0
        r = sh(VENV_PY, str(ROOT / "unified_ebpf.py"), "--unload", "-i", lab.dut_if, "--pin-dir", root,
               check=False, timeout=60)
        assert r.returncode == 0, r.stderr
        assert not lab.xdp_attached()
        assert [n for n in os.listdir(shared) if n.startswith("netsentinel")] == \
            [n for n in os.listdir(shared) if n.startswith("netsentinel-untrusted-")] != []
    finally:
        sh("umount", shared, check=False)
        os.rmdir(shared)


def test_an_interface_name_with_a_dot_is_pinned_and_unloaded(lab, run):
    """bpffs refuses dots in names; VLAN interfaces have one (eth0.100). A veth
    named like one stands in (this kernel may lack the 8021q module)."""
    vlan = f"{lab.dut_if[:12]}.7"
    sh("ip", "-n", lab.dut, "link", "add", vlan, "type", "veth", "peer", "name", f"{lab.dut_if[:12]}p7")
    try:
        sh("ip", "-n", lab.dut, "link", "set", vlan, "up")
        lp = run(interface=vlan)
        assert lp.all_events[0]["pin_dir"] == f"{lab.pin_root}/{vlan.replace('.', '%2E')}"
        assert lp.stop() == 0
        assert lab.pin_dirs() == [vlan]
        r = lab.unload(vlan)
        assert r.returncode == 0 and "detached link ns_xdp_filter" in r.stdout, r.stderr
        assert lab.pin_dirs() == []
    finally:
        sh("ip", "-n", lab.dut, "link", "del", vlan, check=False)


def test_changing_the_rules_never_leaves_a_moment_without_them(lab, run, tmp_path):
    """Rule sets are double-buffered: while other rules come and go 20 times,
    a drop rule matching the peer's steady traffic lets nothing through. 50
    more rules make each rewrite long enough that a set switched off while
    being rewritten (as before) lets datagrams through."""
    lp = run()

    def rules(*commands):
        (tmp_path / "rule_commands.json").write_text(json.dumps(list(commands)))

    port = 40000 + lab.n
    rules({"action": "add_rule", "rule": {"id": "steady", "action": "drop", "src": lab.peer4,
                                          "proto": "udp", "dport": port}})
    lp.wait_for(lambda e: e["type"] == "rule" and e.get("id") == "steady", 10, "drop rule")
    rules(*({"action": "add_rule", "rule": {"id": f"fill{i}", "action": "count", "proto": "tcp",
                                            "dport": 2000 + i}} for i in range(50)))
    lp.wait_for(lambda e: e["type"] == "rule" and e.get("id") == "fill49", 20, "filler rules")
    t = run.traffic()
    t.wait_sent(200)
    for i in range(10):
        rules({"action": "add_rule", "rule": {"id": f"churn{i}", "action": "count", "proto": "tcp",
                                              "dport": 1000 + i}})
        lp.wait_for(lambda e: e["type"] == "rule" and e.get("id") == f"churn{i}", 10, "rule added")
        rules({"action": "remove_rule", "id": f"churn{i}"})
        lp.wait_for(lambda e: e["type"] == "rule" and e.get("id") == f"churn{i}"
                    and e.get("result") == "removed", 10, "rule removed")
    t.wait_sent(200)
    assert t.alive() and t.received() == (0, None), f"{t.received()[0]} datagrams got through"
