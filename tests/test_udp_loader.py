"""The loader's side of outbound UDP (loader/udp.py), without a kernel: the
kernel's rows of a window become one `udp` event per process, schema
checked, with the identity read at each flow's first datagram."""

from __future__ import annotations

import os
import subprocess

from netlab import validate
from netsentinel.kernel.outbound import UdpRow, _addr
from netsentinel.loader.procinfo import read_start
from netsentinel.loader.udp import MAX_FLOWS, UdpTracker
from netsentinel.timefmt import utc_now_iso


def ident(pid: int, comm: str = "dig") -> dict:
    return {"pid": pid, "ppid": 1, "uid": 998, "comm": comm, "exe": f"/usr/bin/{comm}", "exe_source": "proc",
            "cmdline": comm, "proc_error": None}


def event(body: dict) -> dict:
    return validate({"v": 1, "type": "udp", "ts": utc_now_iso(), **body})


def test_one_event_per_process_with_exact_totals_and_the_busiest_flows_first():
    counts: dict = {}
    t = UdpTracker(counts)
    t.first(10, ident(10))
    t.first(10, ident(10))
    t.first(20, ident(20, "nc"))
    rows = [UdpRow(10, "ipv4", "10.0.0.53", 53, 40, 0), UdpRow(10, "ipv6", "fd00::53", 53, 0, 3),
            *[UdpRow(20, "ipv4", "10.0.0.2", p, 1, 1) for p in range(1, MAX_FLOWS + 40)]]
    out = {b["pid"]: event(b) for b in t.window(rows, 1.0, lookup=lambda pid: 1 / 0)}
    dig, nc = out[10], out[20]
    # A resolver lookup (connect + one send) is one datagram, not two.
    assert (dig["datagrams"], dig["connects"], dig["flow_count"], dig["new_flows"]) == (43, 3, 2, 2)
    assert [f["dport"] for f in dig["flows"]] == [53, 53] and dig["flows"][0]["datagrams"] == 40
    assert (nc["comm"], nc["hosts"], nc["busiest_host"], nc["busiest_host_ports"]) == \
        ("nc", 1, "10.0.0.2", MAX_FLOWS + 39)
    assert len(nc["flows"]) == MAX_FLOWS and nc["flow_count"] == MAX_FLOWS + 39
    assert counts == {"udp_flows": 3, "udp_events": 2}
    # The next window: no new flows, identities kept.
    again = t.window([UdpRow(10, "ipv4", "10.0.0.53", 53, 5, 0)], 1.0, lookup=lambda pid: 1 / 0)
    assert (again[0]["new_flows"], again[0]["comm"]) == (0, "dig")


def test_a_sender_never_announced_is_looked_up_and_a_known_pid_reused_is_noticed():
    t = UdpTracker({})
    seen = []
    body = t.window([UdpRow(30, "ipv4", "10.0.0.1", 9, 1, 0)], 0.5,
                    lookup=lambda pid: seen.append(pid) or ident(pid, "gone"))[0]
    assert seen == [30] and event(body)["comm"] == "gone"
    # A live pid read as this process keeps its identity; the same pid held
    # by another process instance (another start time) is read again.
    me = os.getpid()
    t.first(me, ident(me, "python3"))
    assert t.idents[me][1] == read_start(me) is not None
    t.forget_reused([me])
    assert t.idents[me][0]["comm"] == "python3"
    t.idents[me] = (t.idents[me][0], t.idents[me][1] - 1)   # as if read from an earlier process
    t.forget_reused([me])
    assert me not in t.idents


def test_a_gone_senders_identity_is_kept_and_another_threads_name_is_not_a_new_process():
    t = UdpTracker({})
    gone = subprocess.Popen(["true"])
    t.first(gone.pid, ident(gone.pid, "true"))
    gone.wait()
    t.forget_reused([gone.pid])
    assert t.idents[gone.pid][0]["comm"] == "true"   # gone: its reading stands for its last datagrams
    me = os.getpid()
    t.first(me, ident(me, "Chrome_ChildIOT"))          # a thread's name (the kernel's comm)
    t.forget_reused([me])                               # /proc names the process otherwise: same start
    assert t.idents[me][0]["comm"] == "Chrome_ChildIOT"


def test_a_dual_stack_sockets_v4_mapped_destination_is_the_ipv4_host():
    assert _addr(6, bytes(10) + b"\xff\xff" + bytes([10, 0, 0, 7])) == ("ipv4", "10.0.0.7")
    assert _addr(6, bytes([0xfd]) + bytes(14) + b"\x01") == ("ipv6", "fd00::1")
    assert _addr(4, bytes([192, 0, 2, 1]) + bytes(12)) == ("ipv4", "192.0.2.1")
