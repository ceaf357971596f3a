"""Kernel tests: the real loader, real BPF programs, real packets in namespaces.

Each enforcement test follows one rhythm: traffic passes → ban (written by
hand into ban_commands.json) → blocked, while a neighbouring address still
passes → unban → passes again; and at the end nothing stays attached.
"""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from netlab import (lab,  # noqa: F401  (module-scoped fixture)
                    start_loader, stop_loader, ROOT, VENV_PY, LoaderProc, ban_event, kernel_test_skip_reason, ns_connect, read_json,
                    validate, wait_until, write_commands)

SKIP = kernel_test_skip_reason()
pytestmark = pytest.mark.skipif(SKIP is not None, reason=str(SKIP))


@pytest.fixture(scope="module")
def loader(lab, tmp_path_factory):
    lp = start_loader(lab, tmp_path_factory)
    yield lp
    stop_loader(lab, lp)


# --------------------------------------------------------------------------- startup
def test_startup_reports_mode_and_clean_stderr(loader):
    start = loader.all_events[0]
    assert start["type"] == "startup"
    assert start["xdp_mode"] == "native"          # veth supports native XDP
    assert start["cgroup_block"] is True
    assert start["capture_mode"] in ("kprobe", "tracepoint")
    if start["capture_mode"] == "tracepoint":
        assert start["capture_fallback_reason"], "a fallback must say why"
        assert any("falling back to tracepoint" in line for line in loader.stderr_lines)
    # Normal start: nothing on stderr but our own one-line messages.
    noise = [line for line in loader.stderr_lines if not line.startswith("unified_ebpf: ")]
    assert noise == [], f"unexpected stderr on start: {noise}"


# --------------------------------------------------------------------------- XDP
def test_ping_ban_drop_counter_unban(lab, loader):
    assert lab.ping(lab.peer, lab.dut4)
    write_commands(loader.records, [{"action": "ban", "ip": lab.peer4, "reason": "Malicious scan"}])
    ev = ban_event(loader, lab.peer4, result="applied")
    assert ev["reason"] == "Malicious scan"
    assert not lab.ping(lab.peer, lab.dut4, count=2)
    # A neighbouring address of the same host is not banned and still passes.
    assert lab.ping(lab.peer, lab.dut4, source=lab.peer4b)
    banned = wait_until(lambda: (read_json(loader.records / "banned_ips.json", {}).get(lab.peer4) or {})
                        if (read_json(loader.records / "banned_ips.json", {}).get(lab.peer4) or {})
                        .get("drops", 0) >= 2 else None, 6, what="drop counter in banned_ips.json")
    assert banned["source"] == "manual" and banned["last_drop_at"]
    # The command was consumed.
    assert read_json(loader.records / "ban_commands.json") == []
    write_commands(loader.records, [{"action": "unban", "ip": lab.peer4}])
    ban_event(loader, lab.peer4, type_="unban", result="removed")
    assert lab.ping(lab.peer, lab.dut4)
    assert lab.peer4 not in read_json(loader.records / "banned_ips.json", {})


def test_cidr_ban(lab, loader):
    cidr = lab.peer4b.rsplit(".", 1)[0] + ".128/25"
    write_commands(loader.records, [{"action": "ban", "ip": cidr, "reason": "bad range"}])
    ban_event(loader, cidr, result="applied")
    assert not lab.ping(lab.peer, lab.dut4, source=lab.peer4b)     # .130 is inside /25
    assert lab.ping(lab.peer, lab.dut4, source=lab.peer4)          # .2 is outside
    write_commands(loader.records, [{"action": "unban", "ip": cidr}])
    ban_event(loader, cidr, type_="unban", result="removed")
    assert lab.ping(lab.peer, lab.dut4, source=lab.peer4b)


def test_ipv6_ban(lab, loader):
    assert lab.ping(lab.peer, lab.dut6, source=lab.peer6)
    write_commands(loader.records, [{"action": "ban", "ip": lab.peer6}])
    ban_event(loader, lab.peer6, result="applied")
    assert not lab.ping(lab.peer, lab.dut6, source=lab.peer6, count=2)
    assert lab.ping(lab.peer, lab.dut6, source=lab.peer6b)
    write_commands(loader.records, [{"action": "unban", "ip": lab.peer6}])
    ban_event(loader, lab.peer6, type_="unban")
    assert lab.ping(lab.peer, lab.dut6, source=lab.peer6)


# --------------------------------------------------------------------------- cgroup
def test_connect_to_banned_destination_fails_at_once(lab, loader):
    # Unbanned: the peer answers with RST (nothing listens on 9): ECONNREFUSED.
    assert ns_connect(lab, lab.peer4)["errno"] == 111
    write_commands(loader.records, [{"action": "ban", "ip": lab.peer4},
                                    {"action": "ban", "ip": lab.peer6}])
    ban_event(loader, lab.peer4)
    ban_event(loader, lab.peer6)
    for addr, proto in ((lab.peer4, "tcp"), (lab.peer6, "tcp"), (f"::ffff:{lab.peer4}", "tcp"),
                        (lab.peer4, "udp"), (lab.peer6, "udp")):
        r = ns_connect(lab, addr, 9, proto)
        # EPERM comes from the cgroup hook, synchronously: a dropped packet
        # would end in a timeout (ETIMEDOUT), not EPERM.
        assert r["errno"] == 1, f"{proto} to {addr}: expected EPERM, got {r}"
    # Neighbour address still reachable.
    assert ns_connect(lab, lab.peer4b)["errno"] == 111
    write_commands(loader.records, [{"action": "unban", "ip": lab.peer4},
                                    {"action": "unban", "ip": lab.peer6}])
    ban_event(loader, lab.peer6, type_="unban")
    assert ns_connect(lab, lab.peer4)["errno"] == 111
    rec = wait_until(lambda: read_json(loader.records / "loader_status.json"), what="status")
    assert rec["running"] is True


# --------------------------------------------------------------------------- events
def test_connection_event_from_known_process(lab, loader):
    r = ns_connect(lab, lab.peer4, 4321)
    ev = validate(loader.wait_for(lambda e: e["type"] == "connection" and e["pid"] == r["pid"],
                                  10, "connection event of the test process"))
    assert ev["daddr"] == lab.peer4 and ev["dport"] == 4321
    assert ev["saddr"] in (lab.dut4, None)
    assert ev["family"] == "ipv4"
    assert ev["comm"].startswith("python3")
    assert ev["uid"] == 0
    assert ev["mode"] == loader.all_events[0]["capture_mode"]
    # The process may have exited before /proc was read: then null with a reason.
    if ev["exe"] is None:
        assert ev["proc_error"]
    else:
        assert os.path.basename(ev["exe"]).startswith("python3")
        assert "python3" in ev["cmdline"]
    r6 = ns_connect(lab, lab.peer6, 4322)
    ev6 = validate(loader.wait_for(lambda e: e["type"] == "connection" and e["pid"] == r6["pid"],
                                   10, "IPv6 connection event"))
    assert ev6["family"] == "ipv6" and ev6["daddr"] == lab.peer6 and ev6["dport"] == 4322


def test_event_reads_proc_of_live_process(lab, loader):
    """A process that stays alive is described fully: ppid, exe, cmdline."""
    code = ("import socket,time,os,sys; s=socket.socket(); s.settimeout(1)\n"
            "try: s.connect((sys.argv[1], 4444))\nexcept OSError: pass\n"
            "print(os.getpid(), flush=True); time.sleep(3)")
    p = subprocess.Popen(["ip", "netns", "exec", lab.dut, "/usr/bin/python3", "-c", code,
                                        lab.peer4, "marker-arg"], stdout=-1, text=True)
    pid = int(p.stdout.readline())
    ev = validate(loader.wait_for(lambda e: e["type"] == "connection" and e["pid"] == pid, 10,
                                  "live process event"))
    p.wait()
    assert ev["exe"] and os.path.basename(ev["exe"]).startswith("python3")
    assert "marker-arg" in ev["cmdline"]
    assert ev["ppid"] and ev["ppid"] != pid
    assert ev["proc_error"] is None


def test_stats_count_the_connection_events_streamed(lab, loader):
    r = ns_connect(lab, lab.peer4, 4435)
    loader.wait_for(lambda e: e["type"] == "connection" and e["pid"] == r["pid"], 10,
                    "connection event")
    stats = validate(loader.wait_for(lambda e: e["type"] == "stats", 5, "stats event after it"))
    # The counter and the stream agree: every connection event written
    # before this stats event, this test's one included, and nothing else.
    upto = next(i for i, e in enumerate(loader.all_events) if e is stats)
    streamed = sum(1 for e in loader.all_events[:upto] if e["type"] == "connection")
    assert stats["events"] == streamed >= 1 and stats["lost"] == 0


# --------------------------------------------------------------------------- bad input
def test_bad_commands_are_refused_and_kept(lab, loader):
    bad = [
        {"action": "ban", "ip": "not-an-ip"},
        {"action": "nuke", "ip": lab.peer4},
        {"action": "ban", "ip": "0.0.0.0/0"},
        {"action": "ban", "ip": lab.dut4},                             # this host
        {"action": "ban", "ip": f"{lab.peer4.rsplit('.', 1)[0]}.0/24"},  # covers this host
        {"action": "ban", "ip": "10.201.0.5/8"},                       # host bits set
    ]
    write_commands(loader.records, bad)
    for _ in bad:
        validate(loader.wait_for(lambda e: e["type"] == "ban_rejected", 5, "ban_rejected"))
    rejected = read_json(loader.records / "ban_commands.rejected.json")
    kept = [r["command"] for r in rejected[-len(bad):]]
    assert kept == bad
    errors = " | ".join(r["error"] for r in rejected[-len(bad):])
    for words in ("not a valid IP", "unknown action", "too broad", "address of this machine",
                  "did you mean 10.0.0.0/8"):
        assert words in errors, errors
    assert read_json(loader.records / "ban_commands.json") == []
    assert loader.proc.poll() is None and lab.ping(lab.peer, lab.dut4)


def test_malformed_json_is_set_aside_not_lost(loader):
    (loader.records / "ban_commands.json").write_text('[{"action": "ban", "ip": ')
    ev = validate(loader.wait_for(lambda e: e["type"] == "ban_rejected", 5, "rejection of bad JSON"))
    assert "invalid JSON" in ev["error"]
    aside = list(loader.records.glob("ban_commands.json.corrupt-*"))
    assert aside and aside[0].read_text() == '[{"action": "ban", "ip": '
    assert loader.proc.poll() is None


def replace_config(loader, cfg: dict) -> None:
    """Write the whitelist as an editor does: a new file renamed over the old."""
    tmp = loader.config.with_name(loader.config.name + ".new")
    tmp.write_text(json.dumps(cfg))
    tmp.replace(loader.config)


def test_whitelisted_address_cannot_be_banned_and_is_hidden(lab, loader):
    original = json.loads(loader.config.read_text())
    # Hot reload, no restart: the loader looks at the file (a new inode) when it
    # checks the next ban command and the next connection, so no wait is needed.
    replace_config(loader, {**original, "trusted_ips": [lab.peer4b]})
    try:
        write_commands(loader.records, [{"action": "ban", "ip": lab.peer4b}])
        ev = validate(loader.wait_for(lambda e: e["type"] == "ban_rejected", 5, "whitelist refusal"))
        assert "whitelisted" in ev["error"]
        hidden = ns_connect(lab, lab.peer4b, 5555)
        shown = ns_connect(lab, lab.peer4, 5556)
        loader.wait_for(lambda e: e["type"] == "connection" and e["pid"] == shown["pid"], 10, "event")
        assert not any(e.get("pid") == hidden["pid"] for e in loader.all_events
                       if e["type"] == "connection")
    finally:
        # The loader is shared by the module's tests: never leave them a whitelist.
        replace_config(loader, original)


APPENDER = """
import sys
from netsentinel.store import RecordsStore
store = RecordsStore(sys.argv[1])
base, n, worker = sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
for i in range(n):
    store.append_command({"action": "ban", "ip": f"{base}.{worker}.{i}", "reason": f"w{worker}"})
"""


def test_concurrent_writers_while_loader_consumes(lab, loader):
    """8 processes append 25 commands each through the locked store while the
    loader consumes: every one is applied exactly once, none is lost."""
    base = f"10.{203 + lab.n % 40}"
    procs = [subprocess.Popen([VENV_PY, "-c", APPENDER, str(loader.records), base, "25", str(w)],
                              cwd=ROOT) for w in range(8)]
    assert all(p.wait(timeout=60) == 0 for p in procs)
    wanted = {f"{base}.{w}.{i}" for w in range(8) for i in range(25)}
    seen = set()
    while seen != wanted:
        ev = loader.wait_for(lambda e: e["type"] in ("ban", "ban_rejected"), 10, "200 bans")
        assert ev["type"] == "ban", ev
        assert ev["result"] == "applied", f"applied twice: {ev}"
        seen.add(ev["ip"])
    wait_until(lambda: read_json(loader.records / "ban_commands.json") == [], 5, what="queue drained")
    assert wanted <= set(read_json(loader.records / "banned_ips.json"))
    write_commands(loader.records, [{"action": "unban", "ip": ip} for ip in sorted(wanted)])
    wait_until(lambda: not (wanted & set(read_json(loader.records / "banned_ips.json"))), 10,
               what="all unbanned")
