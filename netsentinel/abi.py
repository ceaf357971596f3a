"""The kernel ABI as Python sees it, read from bpf/netsentinel.h at import.

The header is the one source of truth for every constant both sides use:
this module parses each `#define NS_<NAME> <integer>` and the fields of
`struct ns_flow_stats`, so nothing here is retyped. It needs neither root
nor bcc, which is why it sits on the shared floor: filterrules.py (floor)
and the loader and kernel wings all read it. tests/test_abi.py fails when
the header, this module and the other mirrors disagree.
"""

from __future__ import annotations

import re

from .paths import BPF_DIR

HEADER = BPF_DIR / "netsentinel.h"

_DEFINE = re.compile(r"^#define\s+(NS_[A-Z0-9_]+)\s+(0x[0-9a-fA-F]+|\d+)\s*(?:/\*.*)?$", re.M)
_STRUCT = r"struct\s+{name}\s*\{{(.*?)\}};"
_FIELD = re.compile(r"^\s*(?:u8|u16|u32|u64|__be16|__be32)\s+([^;]+);", re.M)


def parse_defines(text: str) -> dict[str, int]:
    return {name: int(value, 0) for name, value in _DEFINE.findall(text)}


def parse_struct_fields(text: str, name: str) -> list[str]:
    """Field names of one struct, in order (arrays by their name alone)."""
    m = re.search(_STRUCT.format(name=re.escape(name)), text, re.S)
    if m is None:
        raise RuntimeError(f"{HEADER}: struct {name} not found; the header and netsentinel/abi.py "
                           "disagree")
    body = re.sub(r"/\*.*?\*/", "", m.group(1), flags=re.S)
    out = []
    for decl in _FIELD.findall(body):
        for part in decl.split(","):
            out.append(part.strip().split("[")[0])
    return out


_TEXT = HEADER.read_text()
C = parse_defines(_TEXT)


def _prefixed(prefix: str) -> dict[str, int]:
    return {k[len(prefix):]: v for k, v in C.items() if k.startswith(prefix)}


MODE_NAMES = {C["NS_MODE_KPROBE"]: "kprobe", C["NS_MODE_TRACEPOINT"]: "tracepoint"}
RULE_ACTION = {"drop": C["NS_RULE_DROP"], "count": C["NS_RULE_COUNT"], "ratelimit": C["NS_RULE_RATELIMIT"]}
# Global counters by index: NS_CNT_XDP_DROPS -> "xdp_drops".
COUNTERS = {v: k.lower() for k, v in _prefixed("NS_CNT_").items() if k != "MAX"}
CNT_MAX = C["NS_CNT_MAX"]
MAX_RULES = C["NS_MAX_RULES"]
MAX_BANS = C["NS_MAX_BANS"]            # the default capacity of each ban map
MAX_BANS_LIMIT = 16 * MAX_BANS         # what --max-bans accepts
FLOW_ENTRIES = C["NS_FLOW_ENTRIES"]
FAMILY_V4, FAMILY_V6 = C["NS_FAMILY_V4"], C["NS_FAMILY_V6"]
PROTOS = {"any": 0, **{k.lower(): v for k, v in _prefixed("NS_IPPROTO_").items()}}
TCP_FLAGS = {k: v for k, v in _prefixed("NS_TCP_").items() if k != "FLAGS_OFFSET"}
REFLECT_PORTS = tuple(sorted(set(_prefixed("NS_REFLECT_PORT_").values())))

# struct ns_flow_stats: the per-window counters are its scalar u64 fields;
# the rest (bitmaps, epochs, *_ns times) is bookkeeping the loader reduces.
FLOW_FIELDS = tuple(parse_struct_fields(_TEXT, "ns_flow_stats"))
FLOW_BOOKKEEPING = tuple(f for f in FLOW_FIELDS if f.startswith("dport_") or f.endswith("_ns"))
FLOW_COUNTERS = tuple(f for f in FLOW_FIELDS if f not in FLOW_BOOKKEEPING)

# Names the Python side looks up in the compiled objects (kernel/selfcheck.py
# checks each exists). ENFORCER_MAPS are pinned, one bpffs directory per interface.
ENFORCER_MAPS = ("bans4", "bans6", "counters", "flows", "rules", "rule_state", "rule_hits",
                 "flow_epoch", "meta", "xdp_config", "agg", "rule_buckets", "xdp_events",
                 "contain_pids", "contain_exes", "contain_socks", "ban_cache", "ban_gen")
# Thresholds the XDP program checks (xdp_config slots) and the aggregate kinds.
CFG = _prefixed("NS_CFG_")
AGG_KINDS = {v: k.lower() for k, v in _prefixed("NS_AGG_").items() if k not in ("ENTRIES", "STEP")}
XEV = _prefixed("NS_XEV_")
WINDOW_NS = C["NS_WINDOW_NS"]
META_PROG_VERSION, META_XDP_FLAGS = C["NS_META_PROG_VERSION"], C["NS_META_XDP_FLAGS"]
RULE_STATE_ACTIVE, RULE_STATE_COUNT0 = C["NS_RULE_STATE_ACTIVE"], C["NS_RULE_STATE_COUNT0"]
ENFORCER_XDP = "ns_xdp_filter"
ENFORCER_TC = "ns_tc_filter"   # the same filter as a TCX ingress program
ENFORCER_CGROUP = ("ns_connect4", "ns_connect6", "ns_sendmsg4", "ns_sendmsg6")
# Containment (issue 12): the cgroup socket-creation hook, and the sched
# tracepoints (pinned perf_event links) that follow a contained process tree.
ENFORCER_SOCK_CREATE = "ns_sock_create"
CONTAIN_TRACEPOINTS = {"ns_contain_fork": "sched/sched_process_fork",
                       "ns_contain_exit": "sched/sched_process_exit"}
# One cgroup_skb program, ns_contain_skb, behind two links (egress, ingress).
CONTAIN_SKB_PROG = "ns_contain_skb"
CONTAIN_SKB_LINKS = ("ns_contain_skb_egress", "ns_contain_skb_ingress")
ENFORCER_CONTAIN = (ENFORCER_SOCK_CREATE, *CONTAIN_SKB_LINKS, *CONTAIN_TRACEPOINTS)
MAX_CONTAINED, MAX_CONTAINED_EXES = C["NS_MAX_CONTAINED"], C["NS_MAX_CONTAINED_EXES"]
MONITOR_MAPS = ("conn_events", "conn_lost", "conn_folds", "conn_known", "conn_quiet")
MONITOR_PROGRAMS = {"kprobe": ("ns_kprobe_v4", "ns_kprobe_v6"), "tracepoint": ()}

_PIN_DIR_OK = re.compile(r"^/[A-Za-z0-9_./@+%-]{1,200}$")


def check_pin_dir(path: str) -> str:
    """A pin directory that is safe to paste into C as a string literal."""
    if not _PIN_DIR_OK.match(path) or "/../" in path + "/" or "//" in path:
        raise ValueError(f"pin directory {path!r} must be an absolute path of letters, digits "
                         "and _ . / @ + - %")
    return path


def cflags(*, max_bans: int = MAX_BANS, pin_dir: str | None = None,
           extra: dict[str, int] | None = None) -> list[str]:
    """clang flags for a program: the header's include path, the sizes as -D
    (validated integers, never pasted user strings) and, for pinned maps,
    the pin directory as a string macro (checked against a strict pattern)."""
    values = {"NS_MAX_BANS": max_bans, "NS_MAX_RULES": MAX_RULES, "NS_FLOW_ENTRIES": FLOW_ENTRIES,
              "NS_AGG_ENTRIES": C["NS_AGG_ENTRIES"],
              **(extra or {})}
    out = ["-Wno-ignored-attributes", f"-I{BPF_DIR}"]
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{name} must be an integer, got {value!r}")
        out.append(f"-D{name}={value}")
    if pin_dir is not None:
        out.append(f'-DNS_PIN_DIR="{check_pin_dir(pin_dir)}"')
    return out
