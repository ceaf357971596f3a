"""What the Review card and table say a threat is about (issue 12): a
process's threat with no single destination (raw socket, raw or UDP
fan-out) shows the process and its fan-out instead of a blank destination.
Events as the loader writes them (docs/events.md), checked by the schema."""

from __future__ import annotations

from netlab import validate
from netsentinel.dashboard.review import subject_of

PROC = {"v": 1, "ts": "2026-12-01T10:00:00Z", "pid": 4242, "ppid": 1, "uid": 998, "comm": "nc",
        "exe": "/usr/bin/nc.openbsd", "cmdline": "nc -zu 10.0.0.2 1-60"}


def test_a_udp_fan_out_names_the_process_and_its_fan_out():
    ev = validate({**PROC, "type": "udp", "exe_source": "proc", "proc_error": None, "window_s": 1.0,
                   "datagrams": 240, "connects": 60, "flow_count": 60, "new_flows": 60, "hosts": 1,
                   "busiest_host": "10.0.0.2", "busiest_host_ports": 60,
                   "flows": [{"daddr": "10.0.0.2", "family": "ipv4", "dport": 1, "datagrams": 4}]})
    assert subject_of({"event": ev, "target": None}) == \
        "nc (pid 4242, uid 998): UDP to 1 host(s), 60 port(s) on 10.0.0.2"


def test_a_raw_fan_out_and_a_raw_socket_name_the_process():
    ev = validate({**PROC, "type": "egress", "attribution": "cookie", "cookie": 7, "window_s": 1.0,
                   "packets": 30, "syns": 30, "icmp": 0, "hosts": 1,
                   "targets": [{"daddr": "10.0.0.2", "family": "ipv4", "packets": 30, "syns": 30, "icmp": 0,
                                "tcp_port_count": 30, "udp_port_count": 0, "tcp_ports": [1], "udp_ports": []}]})
    assert subject_of({"event": ev}) == "nc (pid 4242, uid 998): raw packets to 1 host(s), 30 port(s) on 10.0.0.2"
    raw = {**PROC, "type": "raw_socket", "family": "ipv4", "sock_type": "raw", "protocol_name": "tcp"}
    assert subject_of({"event": raw}) == "nc (pid 4242, uid 998): ipv4 raw socket (tcp)"


def test_a_destination_is_still_the_destination_and_nothing_is_a_question_mark():
    assert subject_of({"event": {**PROC, "type": "connection", "daddr": "10.0.0.9"}}) == "10.0.0.9"
    assert subject_of({"event": {**PROC, "type": "udp"}, "target": "10.0.0.7"}) == "10.0.0.7"
    assert subject_of({"event": "junk"}) == "?"
    assert subject_of({"event": {"type": "udp", "hosts": ["x"]}}).startswith("? (pid ?, uid ?): UDP to ['x']")
