"""Kernel struct offsets from BTF (netsentinel/kernel/btf.py), the stack's
command line, and its parts turning off with their reason: offsets found
through anonymous members and typedefs as C does, the real kernel's BTF read
when present, a missing BTF, tracepoint or drop-reason field each turned
into a one-line reason while the rest goes on."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from netsentinel.kernel.btf import BTF, BTFError, VMLINUX_BTF, rcvq_offsets, stack_offsets

ROOT = Path(__file__).resolve().parent.parent

# `bpftool btf dump format raw` lines, shaped as this kernel prints sk_buff/net_device.
RAW = """\
[1] INT 'unsigned short' size=2 bits_offset=0 nr_bits=16 encoding=(none)
[2] PTR '(anon)' type_id=0
[3] STRUCT 'sk_buff' size=224 vlen=3
\t'(anon)' type_id=4 bits_offset=0
\t'(anon)' type_id=5 bits_offset=1024
\t'head' type_id=2 bits_offset=1536
[4] UNION '(anon)' size=24 vlen=2
\t'dev' type_id=2 bits_offset=128
\t'dev_scratch' type_id=2 bits_offset=128
[5] STRUCT '(anon)' size=56 vlen=2
\t'flags' type_id=1 bits_offset=0 bitfield_size=3
\t'network_header' type_id=1 bits_offset=416
[6] TYPEDEF 'possible_net_t' type_id=7
[7] STRUCT '(anon)' size=8 vlen=1
\t'net' type_id=2 bits_offset=0
[8] STRUCT 'net_device' size=2496 vlen=2
\t'ifindex' type_id=1 bits_offset=1792
\t'nd_net' type_id=6 bits_offset=2112
"""


def test_offsets_through_anonymous_members_and_typedefs():
    btf = BTF(RAW)
    assert btf.offset("sk_buff", "dev") == 16
    assert btf.offset("sk_buff", "network_header") == 128 + 52
    assert btf.offset("sk_buff", "head") == 192
    assert btf.offset("net_device", "nd_net.net") == 264
    with pytest.raises(BTFError, match="bit-field"):
        btf.offset("sk_buff", "flags")
    with pytest.raises(BTFError, match="no member sk_buff|has no member"):
        btf.offset("sk_buff", "nothere")
    with pytest.raises(BTFError, match="struct nope is not"):
        btf.offset("nope", "x")


def test_missing_btf_is_a_reason():
    with pytest.raises(BTFError, match="CONFIG_DEBUG_INFO_BTF"):
        BTF.load(Path("/nonexistent/vmlinux"))


@pytest.mark.skipif(not VMLINUX_BTF.exists(), reason="this kernel has no /sys/kernel/btf/vmlinux")
def test_this_kernels_offsets_are_inside_the_structs():
    offs = stack_offsets()
    assert set(offs) == {"NS_SKB_DEV", "NS_SKB_HEAD", "NS_SKB_NETWORK_HEADER", "NS_DEV_IFINDEX",
                         "NS_DEV_ND_NET", "NS_NET_INUM", "NS_SK_NET"}
    assert all(0 <= v < 8192 for v in offs.values())
    assert offs["NS_SKB_DEV"] % 8 == 0 and offs["NS_SKB_HEAD"] % 8 == 0 and offs["NS_SK_NET"] % 8 == 0
    # The full-queue count's reads of the socket (rx_sk) and its inode.
    q = rcvq_offsets(BTF.load())
    assert set(q) == {"NS_SK_UID", "NS_SK_SOCKET", "NS_SK_RCVBUF", "NS_SK_RMEM_ALLOC", "NS_SKB_TRUESIZE",
                      "NS_SOCKET_INODE_INO"}
    assert all(0 <= v < 8192 for v in q.values()) and q["NS_SK_SOCKET"] % 8 == 0


def test_stack_interval_must_be_positive():
    r = subprocess.run([sys.executable, str(ROOT / "unified_ebpf.py"), "--stack-interval", "0"],
                       capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert r.returncode == 2 and "--stack-interval must be a positive" in r.stderr


# ---------------------------------------------------------------- parts off, with their reason
needs_root = pytest.mark.skipif(__import__("os").geteuid() != 0, reason="loads BPF programs: needs root")


@needs_root
def test_a_missing_tcp_tracepoint_turns_tcp_health_off_not_drops(monkeypatch):
    """As on a kernel without tcp:tcp_probe: TCP health says why it is off;
    drop reasons still load and count."""
    import socket
    from netsentinel.kernel import stack
    monkeypatch.setattr(stack, "TCP_TRACEPOINTS", stack.TCP_TRACEPOINTS + (("tcp", "no_such_event"),))
    p = stack.StackProbe()
    p.start()
    try:
        assert p.tcp_off_reason == "TCP health is off: this kernel lacks tcp:no_such_event"
        assert p.read_tcp() == []
        for _ in range(3):
            try:
                socket.create_connection(("127.0.0.1", 1), timeout=1).close()
            except OSError:
                pass
        assert sum(s["count"] for s in p.read_sites()
                   if s["reason"] == "NO_SOCKET" and s["location"].startswith("tcp_v4_rcv+")) >= 3
    finally:
        p.stop()


@needs_root
def test_a_kfree_skb_without_reasons_turns_drops_off(monkeypatch, tmp_path):
    """As on a kernel before 5.17, whose kfree_skb has no reason field."""
    from netsentinel.kernel import KernelError, stack
    old = tmp_path / "format"
    old.write_text('name: kfree_skb\nprint fmt: "skbaddr=%p protocol=%u location=%p", REC->skbaddr\n')
    monkeypatch.setattr(stack, "KFREE_SKB_FORMAT", old)
    with pytest.raises(KernelError, match="no drop reasons on this kernel"):
        stack.StackProbe().start()


@needs_root
def test_missing_path_and_accept_tracepoints_turn_only_those_off(monkeypatch):
    """As on a kernel without the path's or accept's tracepoints: each says
    why it is off; drops and TCP health still load and count."""
    import socket
    from netsentinel.kernel import stack
    monkeypatch.setattr(stack, "PATH_TRACEPOINTS", stack.PATH_TRACEPOINTS + (("net", "no_such_event"),))
    monkeypatch.setattr(stack, "ACCEPT_TRACEPOINTS", (("syscalls", "no_such_exit"),))
    p = stack.StackProbe()
    p.want_path = True  # --stack-path
    p.start()
    try:
        assert p.path_off_reason == "the per-flow path is off: this kernel lacks net:no_such_event"
        assert p.accept_off_reason == ("the process of accepted connections is off: this kernel lacks "
                                       "syscalls:no_such_exit (CONFIG_FTRACE_SYSCALLS)")
        assert p.tcp_off_reason is None and p.detail_off_reason is None
        with socket.create_server(("127.0.0.1", 0)) as srv:
            port = srv.getsockname()[1]
            c = socket.create_connection(srv.getsockname(), timeout=5)
            srv.accept()[0].close()
            c.close()
        # Read before new sockets can reuse the closed ones' memory (their entries' keys).
        rows = [r for r in p.read_tcp() if port in (r["sport"], r["dport"])]
        assert {r["inbound"] for r in rows} == {True, False}
        assert all(r["pid"] is None for r in rows if r["inbound"])   # no accept hook: no process
        for _ in range(3):
            try:
                socket.create_connection(("127.0.0.1", 1), timeout=1).close()
            except OSError:
                pass
        assert p.read_path() == []
        assert sum(s["count"] for s in p.read_sites()
                   if s["reason"] == "NO_SOCKET" and s["location"].startswith("tcp_v4_rcv+")) >= 3
    finally:
        p.stop()


@needs_root
def test_every_closed_connection_keeps_its_final_report_under_churn():
    """Connections opened and closed back to back reuse the same socket
    memory at once; each still has its final row (closed ones wait in their
    own map, keyed by socket and start time)."""
    import socket
    from netsentinel.kernel import stack
    p = stack.StackProbe()
    p.start()
    try:
        n = 40
        with socket.create_server(("127.0.0.1", 0)) as srv:
            port = srv.getsockname()[1]
            for _ in range(n):
                c = socket.create_connection(("127.0.0.1", port), timeout=5)
                srv.accept()[0].close()
                c.close()
        rows = [r for r in p.read_tcp() if port in (r["sport"], r["dport"]) and r["closed"]]
        assert len(rows) == 2 * n, len(rows)
        assert len({r["key"] for r in rows}) == 2 * n
        assert len({r["key"][0] for r in rows}) < 2 * n   # socket memory was reused meanwhile
        assert p.read_misses()["tcp_closed_full"] == 0
    finally:
        p.stop()


@needs_root
def test_a_connect_flood_past_the_closed_map_keeps_only_what_carried_data():
    """Past MAX_CLOSED closes in one interval, quiet connections (no segment
    in, as a connect flood's) are counted, not kept: the LRU of live
    connections holds none of them and the loader reads none of them; a
    connection that carried data still gets its final report."""
    import socket
    from netsentinel.kernel import stack
    p = stack.StackProbe()
    p.start()
    try:
        with socket.create_server(("127.0.0.1", 0)) as srv:
            port = srv.getsockname()[1]
            flood = stack.MAX_CLOSED // 2 + 200   # two closed sockets each
            for _ in range(flood):
                c = socket.create_connection(("127.0.0.1", port), timeout=5)
                srv.accept()[0].close()
                c.close()
            c = socket.create_connection(("127.0.0.1", port), timeout=5)
            s = srv.accept()[0]
            c.sendall(b"x" * 1000)
            assert s.recv(1000)
            s.close()
            c.close()
        quiet = p.read_misses()["tcp_quiet_closed"]
        rows = [r for r in p.read_tcp() if port in (r["sport"], r["dport"]) and r["closed"]]
        assert quiet > 0   # the closes past the map's room: counted, not kept
        assert len(rows) <= stack.MAX_CLOSED + 2
        assert any(r["segments_in"] > 0 for r in rows)   # the one that carried data
    finally:
        p.stop()
