"""bpf/netsentinel.h is the one source of truth (no root needed): the header,
netsentinel/abi.py, the loader's flow counters, docs/events.schema.json, the
flow model's inputs and the filter rules must agree, so drift fails here on
every machine, not only under `sudo make test`."""

from __future__ import annotations

import inspect
import json
import re

from netsentinel import abi, filterrules
from netsentinel.analyzer import flowmodel
from netsentinel.loader import flows
from netsentinel.paths import BPF_DIR, PROJECT_ROOT

HEADER = (BPF_DIR / "netsentinel.h").read_text()
ENFORCE = (BPF_DIR / "enforce.bpf.c").read_text()
SCHEMA_FLOW = json.loads((PROJECT_ROOT / "docs" / "events.schema.json").read_text())["$defs"]["flow"]


def test_every_define_is_read_and_nothing_is_lost():
    names = set(re.findall(r"^#define\s+(NS_[A-Z0-9_]+)\s+(?:0x[0-9a-fA-F]+|\d+)\b", HEADER, re.M))
    assert names == set(abi.C)
    assert abi.C["NS_TCP_SYN"] == 0x02 and abi.C["NS_IP_FRAG_OFFSET_MASK"] == 0x1FFF


def test_counters_are_dense_and_named_from_the_header():
    assert sorted(abi.COUNTERS) == list(range(abi.CNT_MAX))
    assert set(abi.COUNTERS.values()) == {"xdp_seen", "xdp_drops", "connect_blocked",
                                          "sendmsg_blocked", "rule_drops", "tcp_syn", "udp", "icmp"}


def test_flow_counters_header_loader_schema_model_agree():
    assert flows.COUNTERS == abi.FLOW_COUNTERS
    assert abi.FLOW_COUNTERS[:2] == ("packets", "bytes")
    props = SCHEMA_FLOW["properties"]
    schema_counters = {k for k, v in props.items()
                       if v.get("type") == "integer" and k not in ("dport_buckets", "rank")}
    assert schema_counters == set(abi.FLOW_COUNTERS)
    assert set(abi.FLOW_COUNTERS) <= set(SCHEMA_FLOW["required"])
    # The flow model reads only what a flow event carries, counters included.
    read = set(re.findall(r'ev\.get\("([a-z_]+)"', inspect.getsource(flowmodel.features)))
    assert read <= set(props), read - set(props)
    assert {"tcp", "udp", "icmp", "tcp_syn", "tcp_ack", "icmp_echo", "udp_ssdp",
            "udp_reflect"} <= read & set(abi.FLOW_COUNTERS)


def test_flow_struct_parse_sees_a_new_field():
    changed = HEADER.replace("    u64 udp_reflect;", "    u64 udp_reflect;\n    u64 udp_new;")
    fields = abi.parse_struct_fields(changed, "ns_flow_stats")
    assert "udp_new" in fields and "udp_new" not in abi.FLOW_FIELDS


def test_filter_rules_use_the_header_constants():
    assert filterrules.MAX_RULES == abi.C["NS_MAX_RULES"]
    assert filterrules.PROTOS == {"any": 0, "icmp": 1, "tcp": 6, "udp": 17, "icmpv6": 58}
    assert set(filterrules.PROTOS.values()) - {0} == {v for k, v in abi.C.items()
                                                       if k.startswith("NS_IPPROTO_")}
    rule = filterrules.parse_rule({"action": "count", "proto": "tcp", "tcp_flags": "SYN,!ACK"})
    assert rule.flags_mask == abi.C["NS_TCP_SYN"] | abi.C["NS_TCP_ACK"]
    assert rule.flags_value == abi.C["NS_TCP_SYN"]
    assert set(abi.RULE_ACTION) == {"drop", "count", "ratelimit"}
    assert filterrules.parse_rule({"action": "drop", "proto": "icmp", "src": "192.0.2.1"}).family \
        == abi.C["NS_FAMILY_V4"]


def test_enforce_program_names_its_numbers():
    """The magic numbers live in the header; the program spells their names."""
    for literal in ("1900", "11211", "389", "161", "123", r"53", r"19", "0x1FFF", "0x12", "0x10"):
        assert not re.search(rf"(?<![\w.]){literal}(?![\w.])", ENFORCE), literal
    for name in ("NS_TCP_SYN", "NS_TCP_ACK", "NS_PORT_SSDP", "NS_ICMP_ECHO_REQUEST",
                 "NS_ICMPV6_ECHO_REQUEST", "NS_IP_FRAG_OFFSET_MASK", *(
                     k for k in abi.C if k.startswith("NS_REFLECT_PORT_"))):
        assert name in ENFORCE, name


def test_names_python_uses_are_in_the_sources():
    for m in abi.ENFORCER_MAPS:
        assert re.search(rf"NS_(MAP|RINGBUF)\([^;]*\b{m}\b", ENFORCE), m
    for p in (abi.ENFORCER_XDP, *abi.ENFORCER_CGROUP, abi.ENFORCER_SOCK_CREATE, abi.CONTAIN_SKB_PROG,
              *abi.CONTAIN_TRACEPOINTS):
        assert re.search(rf"\bint {p}\(", ENFORCE), p
    # The containment value is the same struct Python reads (kernel/contain.py).
    assert abi.parse_struct_fields(HEADER, "ns_contain_value") == [
        "expires_ns", "blocked", "last_blocked_ns", "origin", "inherited"]
    monitor = (BPF_DIR / "conn_monitor.bpf.c").read_text()
    for name in (*abi.MONITOR_MAPS, *abi.MONITOR_PROGRAMS["kprobe"]):
        assert name in monitor, name


def test_xdp_event_struct_matches_the_header():
    from netsentinel.kernel.xdpstats import XdpEvent
    fields = abi.parse_struct_fields(abi._TEXT, "ns_xdp_event")
    assert [f for f, _ in XdpEvent._fields_] == fields
    assert set(abi.AGG_KINDS.values()) == {"syn", "udp", "icmp"}
    assert set(abi.CFG) == {"SRC_PPS", "AGG_SYN_PPS", "AGG_UDP_PPS", "AGG_ICMP_PPS", "MAX"}


def test_cflags_pass_the_sizes_and_refuse_odd_pin_paths():
    flags = abi.cflags(max_bans=16, pin_dir="/sys/fs/bpf/netsentinel/eth0")
    assert "-DNS_MAX_BANS=16" in flags and f"-DNS_MAX_RULES={abi.MAX_RULES}" in flags
    assert '-DNS_PIN_DIR="/sys/fs/bpf/netsentinel/eth0"' in flags
    for bad in ('/x"); evil(', "relative/dir", "/a/../b", "/a b", "/a\\b"):
        try:
            abi.cflags(pin_dir=bad)
        except ValueError:
            continue
        raise AssertionError(f"accepted {bad!r}")


# C member types as Python's struct module spells them (little-endian, no padding).
_CODES = {"u8": "B", "u16": "H", "u32": "I", "u64": "Q", "char": "s"}


def test_connection_event_decoder_matches_the_header():
    """kernel/connevent.py unpacks struct ns_conn_event by hand (no ctypes
    per event): its format must follow the header's members, in order."""
    from netsentinel.kernel.connevent import EVENT
    body = re.search(r"struct ns_conn_event \{(.*?)\n\};", HEADER, re.S).group(1)
    body = re.sub(r"/\*.*?\*/", "", body, flags=re.S)
    fmt = "<"
    for ctype, name, n in re.findall(r"^\s*(u8|u16|u32|u64|char)\s+(\w+)(?:\[(\d+)\])?;", body, re.M):
        code = _CODES[ctype]
        fmt += f"{n}s" if n else code
    assert EVENT.format == fmt, (EVENT.format, fmt)
    assert abi.parse_struct_fields(HEADER, "ns_conn_event")[:3] == ["ts_ns", "start_ns", "pid"]
