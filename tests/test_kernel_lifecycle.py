"""Kernel tests of the loader's life: restart, signals, modes, VLAN, kprobes.

Each test starts its own loader (the interface can hold one XDP program), in
a lab of its own module so no other loader holds it meanwhile.
"""

from __future__ import annotations

import json
import signal
import socket
import struct

import pytest

from netlab import (lab,  # noqa: F401  (module-scoped fixture)
                    ROOT, VENV_PY, LoaderProc, ban_event, kernel_test_skip_reason, ns_connect,
                    read_json, sh, unload_all, validate, wait_until, write_commands)
from netsentinel.abi import ENFORCER_CGROUP, ENFORCER_CONTAIN, ENFORCER_MAPS, ENFORCER_XDP
from netsentinel.kernel.host import kprobes_unavailable_reason
from netsentinel.testing.frames import INJECT_CODE as INJECT

SKIP = kernel_test_skip_reason()
pytestmark = pytest.mark.skipif(SKIP is not None, reason=str(SKIP))


@pytest.fixture
def fresh(lab, tmp_path):
    cfg = tmp_path / "filter_config.json"
    cfg.write_text("{}")
    started = []

    def start(*extra, **kw):
        lp = LoaderProc(lab, tmp_path, cfg, *extra, **kw)
        started.append(lp)
        validate(lp.wait_started())
        return lp
    yield start
    for lp in started:
        if lp.proc.poll() is None:
            lp.stop()
    unload_all(lab)


def test_restart_restores_bans_and_ttl_expires(lab, fresh, tmp_path):
    lp = fresh()
    write_commands(tmp_path, [{"action": "ban", "ip": lab.peer4, "reason": "keep me"},
                              {"action": "ban", "ip": lab.peer6, "ttl_seconds": 15}])
    ban_event(lp, lab.peer4)
    ban_event(lp, lab.peer6)
    assert lp.stop() == 0
    assert lab.xdp_attached()
    assert not lab.ping(lab.peer, lab.dut4), "the ban holds while the loader is down"
    lp2 = fresh()
    start = lp2.all_events[0]
    assert start["type"] == "startup" and start["bans_restored"] == 2
    ban_event(lp2, lab.peer4, result="restored")
    assert not lab.ping(lab.peer, lab.dut4)
    assert read_json(tmp_path / "banned_ips.json")[lab.peer4]["reason"] == "keep me"
    ban_event(lp2, lab.peer6, type_="unban", result="expired", timeout=25)
    assert lab.peer6 not in read_json(tmp_path / "banned_ips.json")
    assert lab.ping(lab.peer, lab.dut6)


def loaded_ids() -> set[int]:
    """Ids of every BPF program loaded in the kernel right now."""
    return {p["id"] for p in json.loads(sh("bpftool", "-j", "prog", "show").stdout or "[]")}


def programs_of(lp) -> dict[str, int]:
    """The loader's own programs, as it reports them in loader_status.json."""
    return wait_until(lambda: (read_json(lp.records / "loader_status.json") or {}).get("programs"), 10,
                      what="program ids in loader_status.json")


def enforcer_programs(lp) -> dict[str, int]:
    return {n: i for n, i in programs_of(lp).items() if n in (ENFORCER_XDP, *ENFORCER_CGROUP)}


def cgroup_prog_ids() -> set[int]:
    """Ids of the programs `bpftool cgroup tree` shows attached anywhere."""
    out = sh("bpftool", "-j", "cgroup", "tree").stdout or "[]"
    return {p["id"] for cg in json.loads(out) for p in cg.get("programs", [])}


def test_sigterm_and_sigkill_leave_enforcement_and_unload_removes_it(lab, fresh):
    lp = fresh()
    mine = enforcer_programs(lp)
    assert set(mine) == {"ns_xdp_filter", "ns_connect4", "ns_connect6", "ns_sendmsg4", "ns_sendmsg6"}
    assert set(mine.values()) <= loaded_ids()          # the ids are real, and loaded
    assert lab.xdp_attached()
    assert lp.stop(signal.SIGTERM) == 0
    # Stop ends monitoring, not protection, and says so.
    assert lab.xdp_attached()
    assert set(mine.values()) <= loaded_ids()
    assert any("enforcement stays in place" in line for line in lp.stderr_lines)
    assert lp.all_events[-1]["type"] == "shutdown"
    assert "enforcement stays in place" in lp.all_events[-1]["message"]
    status = read_json(lp.records / "loader_status.json")
    assert status["running"] is False and status["programs"] == {}
    # A crash too: the links are pinned, not held by the process.
    lp2 = fresh()
    assert enforcer_programs(lp2) == mine, "an unchanged program is kept, not replaced"
    lp2.stop(signal.SIGKILL)
    assert lab.xdp_attached()
    cg = {mine[n] for n in ("ns_connect4", "ns_connect6", "ns_sendmsg4", "ns_sendmsg6")}
    assert cg <= cgroup_prog_ids()
    # Only --unload takes it down: one line per object, then nothing of ours is left.
    r = lab.unload()
    assert r.returncode == 0, r.stderr
    lines = [l for l in r.stdout.splitlines() if l.startswith("unload: ")]
    assert sum("detached link" in l for l in lines) == 1 + len(ENFORCER_CGROUP) + len(ENFORCER_CONTAIN)
    assert sum("removed map" in l for l in lines) == len(ENFORCER_MAPS)
    assert not lab.xdp_attached() and lab.pinned() == []
    assert not (cg & cgroup_prog_ids())
    wait_until(lambda: not (set(mine.values()) & loaded_ids()), 5, what="programs freed after --unload")


def test_second_signal_during_shutdown_is_safe(lab, fresh):
    lp = fresh()
    lp.proc.send_signal(signal.SIGINT)
    lp.proc.send_signal(signal.SIGTERM)
    assert lp.proc.wait(timeout=20) == 0
    assert lab.xdp_attached()


def test_monitor_only_mode(lab, fresh, tmp_path):
    lp = fresh("--no-xdp")
    assert lp.all_events[0]["xdp_mode"] is None and lp.all_events[0]["cgroup_block"] is False
    assert not lab.xdp_attached()
    progs = programs_of(lp)
    # The monitor, the outbound monitor (its UDP hooks count, never refuse),
    # and (--stack, the default) the stack's tracepoints.
    assert sorted(n for n in progs if not n.startswith("stack/")) == [
        *(f"outbound:ns_udp_{hook}{v}" for hook in ("connect", "recvmsg", "sendmsg") for v in (4, 6)),
        "outbound:tracepoint__sched__sched_process_exec", "outbound:tracepoint__sched__sched_process_fork",
        "outbound:tracepoint__sock__inet_sock_set_state",
        "outbound:tracepoint__syscalls__sys_enter_socket", "outbound:tracepoint__syscalls__sys_exit_dup",
        "outbound:tracepoint__syscalls__sys_exit_dup2", "outbound:tracepoint__syscalls__sys_exit_dup3",
        "outbound:tracepoint__syscalls__sys_exit_socket", "tracepoint__sock__inet_sock_set_state"]
    assert all(n.startswith("stack/tracepoint__") for n in progs if n.startswith("stack/"))
    write_commands(tmp_path, [{"action": "ban", "ip": lab.peer4}])
    r = ns_connect(lab, lab.peer4, 7777)
    lp.wait_for(lambda e: e["type"] == "connection" and e["pid"] == r["pid"], 10, "event")
    assert r["errno"] == 111      # not blocked
    assert read_json(tmp_path / "ban_commands.json") == [{"action": "ban", "ip": lab.peer4}]


def test_ban_flag_at_startup(lab, fresh):
    lp = fresh("--ban", lab.peer4)
    ban_event(lp, lab.peer4, result="applied")
    assert not lab.ping(lab.peer, lab.dut4)


def test_tcx_fallback_without_native_xdp_and_generic_only_when_asked(lab, fresh):
    # The loopback device has no native XDP: auto falls back to TCX, never to
    # generic XDP (kernel/ingress.py), and says why native failed.
    lp = fresh(interface="lo")
    start = lp.all_events[0]
    assert (start["xdp_mode"], start["ingress_path"]) == ("tc", "tcx-ingress")
    assert start["xdp_native_error"].startswith("native XDP on lo (driver unknown) failed: ")
    assert any("using tcx-ingress instead" in line for line in lp.stderr_lines)
    assert lp.stop() == 0
    unload_all(lab)
    # Asked for, generic is used; lo has no fixed GRO_HW/LRO, so the taint stays as it was.
    lp = fresh("--xdp-mode", "generic", interface="lo")
    start = lp.all_events[0]
    assert (start["xdp_mode"], start["ingress_path"], start["kernel_taint"]) == \
        ("generic", "xdp-generic", None)


def _frame(dst_mac: bytes, src_mac: bytes, tags: list[tuple[int, int]], src_ip: str, dst_ip: str) -> bytes:
    """Ethernet (+ VLAN tags) + IPv4 + ICMP echo, built by hand."""
    icmp = struct.pack("!BBHHH", 8, 0, 0, 0x1234, 1) + b"netsentinel"
    csum = _checksum(icmp)
    icmp = icmp[:2] + struct.pack("!H", csum) + icmp[4:]
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(icmp), 1, 0, 64, 1, 0,
                     socket.inet_aton(src_ip), socket.inet_aton(dst_ip))
    ip = ip[:10] + struct.pack("!H", _checksum(ip)) + ip[12:]
    eth = dst_mac + src_mac
    for tpid, vid in tags:
        eth += struct.pack("!HH", tpid, vid)
    return eth + struct.pack("!H", 0x0800) + ip + icmp


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


@pytest.mark.parametrize("mode", ["native", "tc"])
def test_vlan_tagged_frames_are_filtered(lab, fresh, mode):
    """802.1Q and 802.1ad+802.1Q frames from a banned source are dropped at XDP
    or TCX ingress (counted per ban); the same frames from an unbanned source
    are not. At TCX the kernel has taken the outer tag into the skb already."""
    macs = {ns: bytes.fromhex(json.loads(sh("ip", "-n", ns, "-j", "link", "show", ifc).stdout)[0]
                              ["address"].replace(":", ""))
            for ns, ifc in ((lab.dut, lab.dut_if), (lab.peer, lab.peer_if))}
    lp = fresh("--xdp-mode", mode)
    assert lp.all_events[0]["xdp_mode"] == mode
    write_commands(lp.records, [{"action": "ban", "ip": lab.peer4b}])
    ban_event(lp, lab.peer4b)
    frames = {
        "802.1Q": _frame(macs[lab.dut], macs[lab.peer], [(0x8100, 100)], lab.peer4b, lab.dut4),
        "QinQ": _frame(macs[lab.dut], macs[lab.peer], [(0x88A8, 7), (0x8100, 100)], lab.peer4b, lab.dut4),
        "clean": _frame(macs[lab.dut], macs[lab.peer], [(0x8100, 100)], lab.peer4, lab.dut4),
    }
    expected = 0
    for name in ("802.1Q", "QinQ", "clean"):
        r = lab.ns_exec(lab.peer, "/usr/bin/python3", "-c", INJECT, lab.peer_if, frames[name].hex(), "5")
        assert r.returncode == 0, r.stderr
        expected += 5 if name != "clean" else 0
        wait_until(lambda: (read_json(lp.records / "banned_ips.json", {}).get(lab.peer4b) or {})
                   .get("drops", 0) == expected, 6, what=f"{expected} drops after {name} frames")


def test_kprobe_path(lab, fresh, tmp_path):
    reason = kprobes_unavailable_reason()
    if reason is not None:
        # Prove the loader refuses --capture kprobe with that reason, then say so out loud.
        r = sh("ip", "netns", "exec", lab.dut, VENV_PY, "-u", str(ROOT / "unified_ebpf.py"),
               "--no-xdp", "--capture", "kprobe", "--duration", "1", "--records", str(tmp_path),
               "--config", str(tmp_path / "filter_config.json"), check=False, timeout=120)
        assert r.returncode == 1 and reason in r.stderr, r.stderr
        pytest.skip(f"kprobe path not testable here: {reason}")
    lp = fresh("--capture", "kprobe")
    assert lp.all_events[0]["capture_mode"] == "kprobe"
    r = ns_connect(lab, lab.peer4, 6001)
    ev = validate(lp.wait_for(lambda e: e["type"] == "connection" and e["pid"] == r["pid"], 10,
                              "kprobe event"))
    assert ev["mode"] == "kprobe" and ev["daddr"] == lab.peer4 and ev["dport"] == 6001
    r6 = ns_connect(lab, lab.peer6, 6002)
    ev6 = validate(lp.wait_for(lambda e: e["type"] == "connection" and e["pid"] == r6["pid"], 10,
                               "kprobe IPv6 event"))
    assert ev6["daddr"] == lab.peer6
