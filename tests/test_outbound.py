"""Outbound behaviour, loader side (netsentinel/loader/outbound.py), on real
processes: stdio-on-a-TCP-socket and service-parent signals read from /proc,
holding a shell's connection until its redirection happens, and raw_socket
event fields. No kernel programs here (tests/test_kernel_outbound.py)."""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import socket
import subprocess
import sys

import pytest

from netsentinel.events import EventWriter
from netsentinel.kernel.outbound import EgressRow, RawSocket, StdioDup, protocol_name
from netsentinel.loader.egress import EgressTracker, socket_cookie
from netsentinel.loader.outbound import Outbound, is_shell, parent_service, signals_for, usr_merged
from netsentinel.loader.stdio import _hex_endpoint, stdio_socket
from netsentinel.loader.procinfo import ProcCache
from netsentinel.testing.lab import wait_until


@pytest.fixture
def listener():
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    yield srv
    srv.close()


@pytest.fixture
def procs():
    started: list[subprocess.Popen] = []

    def start(*args, **kw) -> subprocess.Popen:
        p = subprocess.Popen(list(args), **kw)
        started.append(p)
        return p
    yield start
    for p in started:
        p.kill()
        p.wait()


def test_stdio_on_a_tcp_socket_is_seen_with_its_peer(listener, procs):
    port = listener.getsockname()[1]
    client = socket.create_connection(("127.0.0.1", port))
    p = procs("sleep", "60", stdin=client, stdout=client)
    client.close()
    found = stdio_socket(p.pid)
    assert found == f"fd 0,1 -> tcp 127.0.0.1:{port} (ESTABLISHED)"


def test_pipes_files_and_unix_sockets_are_not_network_stdio(procs, tmp_path):
    assert stdio_socket(procs("sleep", "60", stdin=subprocess.PIPE, stdout=subprocess.PIPE).pid) is None
    a, b = socket.socketpair()
    assert stdio_socket(procs("sleep", "60", stdin=a, stdout=a).pid) is None
    with open(tmp_path / "out", "w") as f:
        assert stdio_socket(procs("sleep", "60", stdout=f).pid) is None
    a.close(), b.close()
    assert stdio_socket(2 ** 22 + 7) is None   # no such process


def test_a_program_spawned_by_a_service_has_the_parent_signal(procs):
    # A real parent that calls itself nginx (PR_SET_NAME), spawning a child.
    code = ("import ctypes, subprocess, sys; ctypes.CDLL(None).prctl(15, b'nginx', 0, 0, 0); "
            "c = subprocess.Popen(['sleep', '60']); print(c.pid, flush=True); c.wait()")
    parent = procs(sys.executable, "-c", code, stdout=subprocess.PIPE, text=True)
    child = int(parent.stdout.readline())
    try:
        assert parent_service(parent.pid, "sleep") == f"parent nginx (pid {parent.pid})"
        assert parent_service(parent.pid, "nginx") is None      # its own worker
        assert signals_for({"pid": child, "ppid": parent.pid, "comm": "sleep"}) == {
            "parent_service": f"parent nginx (pid {parent.pid})"}
        assert parent_service(1, "sleep") is None               # init is no service
    finally:
        subprocess.run(["kill", str(child)])


def test_a_shell_connection_is_held_until_its_stdio_becomes_the_socket(listener, procs):
    """bash connects first and moves the socket onto fd 0/1 afterwards: the
    event waits for that (here: until we let bash go on)."""
    port = listener.getsockname()[1]
    bash = procs("bash", "-c", f"read go; exec 0<>/dev/tcp/127.0.0.1/{port} 1>&0; exec sleep 60",
                 stdin=subprocess.PIPE, text=True)
    out: list[tuple[str, dict]] = []
    ob = Outbound(ProcCache(), lambda t, **f: out.append((t, f)), hold_s=120)
    ob.connection({"pid": bash.pid, "ppid": 1, "comm": "bash", "exe": "/usr/bin/bash",
                   "proc_error": None, "daddr": "127.0.0.1", "dport": port})
    ob.poll()
    assert out == [] and ob.counts["held"] == 1
    bash.stdin.write("go\n")
    bash.stdin.flush()
    wait_until(lambda: ob.poll() or out, timeout=10, what="the held connection")
    ((type_, fields),) = out
    assert type_ == "connection"
    assert fields["signals"]["stdio_socket"] == f"fd 0,1 -> tcp 127.0.0.1:{port} (ESTABLISHED)"
    assert ob.counts["signalled"] == 1


def test_held_connections_go_out_without_signal_when_time_is_up_or_at_exit(procs):
    out: list[tuple[str, dict]] = []
    ob = Outbound(ProcCache(), lambda t, **f: out.append((t, f)), hold_s=0.2)
    shell = procs("sleep", "60", stdin=subprocess.PIPE)
    base = {"ppid": 1, "proc_error": None, "daddr": "10.0.0.5", "dport": 443}
    ob.connection(dict(base, pid=shell.pid, comm="sh", exe="/usr/bin/dash"))
    wait_until(lambda: ob.poll() or out, timeout=10, what="the hold to end")
    assert out[0][1]["pid"] == shell.pid and "signals" not in out[0][1]
    ob2 = Outbound(ProcCache(), lambda t, **f: out.append((t, f)), hold_s=600)
    ob2.connection(dict(base, pid=shell.pid, comm="python3", exe="/usr/bin/python3.11"))
    ob2.poll(flush=True)
    assert len(out) == 2
    # Not a shell: never held.
    ob2.connection(dict(base, pid=shell.pid, comm="curl", exe="/usr/bin/curl"))
    assert len(out) == 3 and ob2.counts["held"] == 1


def test_shell_names_by_comm_or_exe():
    for comm, exe in (("bash", None), ("x", "/usr/bin/python3.11"), ("perl", "/usr/bin/perl"),
                      ("nc", "/usr/bin/nc.openbsd"), ("kworker", "/tmp/sh (deleted)")):
        assert is_shell(comm, exe), (comm, exe)
    for comm, exe in (("curl", "/usr/bin/curl"), ("bashful", None), ("sshd", "/usr/sbin/sshd")):
        assert not is_shell(comm, exe), (comm, exe)


def test_raw_socket_event_uses_the_exec_path_when_the_process_is_gone():
    out: list[tuple[str, dict]] = []
    ob = Outbound(ProcCache(), lambda t, **f: out.append((t, f)))
    gone = 2 ** 22 + 11
    ob.raw_socket(RawSocket(ts_ns=1, pid=gone, tid=gone, uid=0, fd=3, comm="ping", family="ipv4",
                            sock_type="raw", protocol=1, protocol_name="icmp", exec_path="/bin/ping"))
    ((type_, f),) = out
    assert type_ == "raw_socket"
    assert f["exe"] == usr_merged("/bin/ping") and f["exe_source"] == "exec"
    assert f["proc_error"] and f["cmdline"] is None
    ob.raw_socket(RawSocket(ts_ns=1, pid=gone, tid=gone, uid=0, fd=3, comm="x", family="packet",
                            sock_type="raw", protocol=768, protocol_name="all", exec_path=None))
    assert out[1][1]["exe"] is None and out[1][1]["exe_source"] is None


def test_address_and_protocol_decoding():
    assert _hex_endpoint("0100007F:01BB") == "127.0.0.1:443"
    assert _hex_endpoint("0000000000000000FFFF00000100007F:0035") == "127.0.0.1:53"
    assert _hex_endpoint("000080FE00000000FF57B0FE0B7A2AFE:0016") == "[fe80::feb0:57ff:fe2a:7a0b]:22"
    assert protocol_name(17, socket.htons(3)) == "all"
    assert protocol_name(17, 0) == "none (send only)"
    assert protocol_name(2, 6) == "tcp" and protocol_name(10, 58) == "icmpv6"
    assert usr_merged("/tmp/bin/ping") == "/tmp/bin/ping" and usr_merged("./ping") == "./ping"


RAW_HOLDER = ("import socket, sys; s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP); "
              "print(s.fileno(), int.from_bytes(s.getsockopt(socket.SOL_SOCKET, 57, 8), 'little'), "
              "flush=True); sys.stdin.readline()")


def raw_socket_holder(procs) -> tuple[subprocess.Popen, int, int]:
    """A real process holding a raw socket: (process, its fd, its SO_COOKIE as it reads it)."""
    p = procs(sys.executable, "-c", RAW_HOLDER, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    fd, cookie = map(int, p.stdout.readline().split())
    return p, fd, cookie


def test_socket_cookie_is_read_out_of_the_owning_process(procs):
    """pidfd_getfd + SO_COOKIE: the cookie the egress program keys on."""
    p, fd, cookie = raw_socket_holder(procs)
    assert socket_cookie(p.pid, fd) == cookie
    assert socket_cookie(p.pid, 0) is None          # a pipe, not a socket
    assert socket_cookie(2 ** 22 + 13, fd) is None  # no such process


def test_egress_windows_name_the_socket_owner_or_list_candidates(procs):
    p, fd, cookie = raw_socket_holder(procs)
    tr = EgressTracker()
    tr.remember({"pid": p.pid, "ppid": 1, "uid": 0, "comm": "python3", "exe": sys.executable,
                 "cmdline": "x", "fd": fd})
    tr.remember({"pid": 2 ** 22 + 17, "ppid": None, "uid": 0, "comm": "hping3",
                 "exe": "/usr/sbin/hping3", "cmdline": None, "fd": 3})     # already gone
    rows = [EgressRow(cookie, "ipv4", "10.0.0.5", "tcp", port, 1, 1) for port in range(100, 400)]
    rows += [EgressRow(cookie, "ipv4", "10.0.0.6", "icmp", 0, 3, 0),
             EgressRow(cookie + 1000, "ipv4", "10.0.0.7", "udp", 53, 2, 0)]
    mine, other = sorted(tr.window(rows, 1.0), key=lambda b: b["cookie"])
    assert (mine["attribution"], mine["pid"], mine["comm"]) == ("cookie", p.pid, "python3")
    assert (mine["packets"], mine["syns"], mine["icmp"], mine["hosts"]) == (303, 300, 3, 2)
    first = mine["targets"][0]
    assert first["daddr"] == "10.0.0.5" and first["tcp_port_count"] == 300
    assert first["tcp_ports"] == list(range(100, 356))                       # listed: at most 256
    assert (other["attribution"], other["pid"]) == (None, None)
    assert other["candidates"] == [{"pid": 2 ** 22 + 17, "comm": "hping3", "exe": "/usr/sbin/hping3"}]
    assert other["targets"][0]["udp_ports"] == [53]


def test_a_late_redirection_is_reported_again_once_with_its_signal(listener, procs):
    """The kernel reports a dup onto fd 0/1 (StdioDup); the loader then finds
    the socket there and reports the connection again, mode stdio, once."""
    port = listener.getsockname()[1]
    bash = procs("bash", "-c", f"exec 3<>/dev/tcp/127.0.0.1/{port}; echo connected; read go; "
                 "exec sleep 60 <&3 >&3", stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    out: list[tuple[str, dict]] = []
    ob = Outbound(ProcCache(), lambda t, **f: out.append((t, f)))
    dup = StdioDup(pid=bash.pid, tid=bash.pid, uid=0, newfd=0, comm="bash")
    assert bash.stdout.readline() == "connected\n"
    ob.stdio_dup(dup)
    assert out == []                       # fd 0/1 are still pipes
    bash.stdin.write("go\n")
    bash.stdin.flush()
    wait_until(lambda: stdio_socket(bash.pid), what="the redirection")
    ob.stdio_dup(dup)
    ob.stdio_dup(dup)                      # the second dup (fd 1) of the same socket
    ((type_, f),) = out
    assert (type_, f["mode"], f["comm"], f["daddr"], f["dport"]) == (
        "connection", "stdio", "bash", "127.0.0.1", port)
    assert f["signals"]["stdio_socket"] == f"fd 0,1 -> tcp 127.0.0.1:{port} (ESTABLISHED)"
    assert f["saddr"] == "127.0.0.1" and f["sport"] > 0 and f["exe"] == "/usr/bin/sleep"


def test_the_redirecting_shell_is_named_not_a_child_that_inherited_the_socket(listener, procs):
    port = listener.getsockname()[1]
    bash = procs("bash", "-c", f"exec 0<>/dev/tcp/127.0.0.1/{port} 1>&0; sleep 60; true")
    children = f"/proc/{bash.pid}/task/{bash.pid}/children"
    child = int(wait_until(lambda: open(children).read().split(), what="bash's child")[0])
    wait_until(lambda: stdio_socket(child), what="the child's inherited stdio")
    out: list[tuple[str, dict]] = []
    ob = Outbound(ProcCache(), lambda t, **f: out.append((t, f)))
    ob.stdio_dup(StdioDup(pid=child, tid=child, uid=0, newfd=1, comm="sleep"))   # read first
    ob.stdio_dup(StdioDup(pid=bash.pid, tid=bash.pid, uid=0, newfd=0, comm="bash"))
    ((_, f),) = out
    assert (f["pid"], f["comm"], f["dport"]) == (bash.pid, "bash", port)


def test_a_shell_whose_name_is_not_utf8_is_named_byte_exact(listener, procs, tmp_path):
    """comm read from /proc is hostile input: a shell copied to a name with
    bytes 0xff 0xfe is reported as the kernel reports it (lossless), and
    written as valid JSON with the raw bytes in comm_b64."""
    name = b"scan\xff\xfe"
    odd = os.path.join(os.fsencode(tmp_path), name)
    shutil.copy(shutil.which("bash"), odd)
    port = listener.getsockname()[1]
    bash = procs(odd, "-c", f"exec 0<>/dev/tcp/127.0.0.1/{port} 1>&0; sleep 60; true")
    children = f"/proc/{bash.pid}/task/{bash.pid}/children"
    child = int(wait_until(lambda: open(children).read().split(), what="the shell's child")[0])
    wait_until(lambda: stdio_socket(child), what="the child's inherited stdio")
    raw = io.BytesIO()
    stream = io.TextIOWrapper(raw, encoding="utf-8", errors="strict")
    writer = EventWriter(stream)
    ob = Outbound(ProcCache(), writer.emit)
    ob.stdio_dup(StdioDup(pid=child, tid=child, uid=0, newfd=1, comm="sleep"))
    stream.flush()
    ev = json.loads(raw.getvalue())
    assert (ev["pid"], ev["comm"], ev["dport"]) == (bash.pid, "scan\\xff\\xfe", port)
    assert base64.b64decode(ev["comm_b64"]) == name
