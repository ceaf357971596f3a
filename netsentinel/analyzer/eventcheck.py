"""The fields of one event of the loader's stream, checked (docs/events.md,
schema v1): version, type, time, and for connection, flow and aggregate
events every field the analyzer reads, with its type and range. A wrong
one is BadLine with a one-line reason (analyzer/inputs.py reads the lines)."""

from __future__ import annotations

from datetime import datetime

from ..errors import NetSentinelError
from ..events import EVENT_TYPES, SCHEMA_VERSION
from ..timefmt import parse_iso
from .ipcache import KNOWN_IPS, parse_ip

# Checked by hand rather than with jsonschema: this runs for every event and
# must stay in the microseconds.
_CONN_TYPES = {
    "pid": int, "uid": int, "comm": str, "daddr": str, "dport": int, "family": str,
}
_CONN_NULLABLE = {"ppid": int, "exe": str, "cmdline": str, "saddr": str, "sport": int,
                  "proc_error": str, "tid": int, "mode": str, "comm_b64": str, "exe_b64": str,
                  "cmdline_b64": str, "sid": int, "parent_comm": str, "session_leader": str}
_BY_TYPE = (tuple(k for k, t in _CONN_TYPES.items() if t is int),
            tuple(k for k, t in _CONN_TYPES.items() if t is str),
            tuple(k for k, t in _CONN_NULLABLE.items() if t is int),
            tuple(k for k, t in _CONN_NULLABLE.items() if t is str))
_INT, _STR, _INT_NONE, _STR_NONE = {int}, {str}, {int, type(None)}, {str, type(None)}
assert set(_CONN_TYPES.values()) | set(_CONN_NULLABLE.values()) == {int, str}  # what _BY_TYPE covers
# Flow counters: numbers when present (a missing one counts as 0).
_FLOW_NUMBERS = ("window_s", "pps", "bps", "packets", "bytes", "tcp", "udp", "icmp", "other",
                 "tcp_syn", "tcp_ack", "icmp_echo", "udp_ssdp", "udp_reflect", "pkt_size_mean",
                 "dport_buckets", "rank")
_MAX_NUMBER = 1e15


class BadLine(NetSentinelError, ValueError):
    """An input line that is not an event; str() is the one-line reason."""


def count(v) -> int | None:
    """An event's non-negative integer field (a bool is not one), else None."""
    return v if isinstance(v, int) and not isinstance(v, bool) and v >= 0 else None


def check_event(ev: dict) -> None:
    """ev (a decoded JSON object) is a v1 event the analyzer can read, or BadLine with why."""
    if ev.get("v") != SCHEMA_VERSION:
        raise BadLine(f"not a v{SCHEMA_VERSION} event (v={_show(ev.get('v'))})")
    if ev.get("type") not in EVENT_TYPES:
        raise BadLine(f"unknown event type {_show(ev.get('type'))}")
    if not isinstance(ev.get("ts"), str):
        raise BadLine("missing ts")
    try:
        event_seconds(ev["ts"])
    except (ValueError, TypeError):
        raise BadLine(f"ts {_show(ev['ts'])} is not an ISO-8601 time") from None
    if ev["type"] == "connection":
        _check_connection(ev)
    elif ev["type"] == "flow":
        _check_flow(ev)
    elif ev["type"] == "flow_aggregate":
        _check_aggregate(ev)


_last_ts: tuple = ("", None)   # the last time text read and its value (one tuple, swapped whole)


def event_seconds(text: str):
    """parse_iso(text), remembered for the last text: the reader checks an
    event's time, then the rules read the same text again."""
    global _last_ts
    last = _last_ts
    if text and last[0] == text:
        return last[1]
    value = parse_iso(text)
    _last_ts = (text, value)
    return value


_TYPED = _BY_TYPE[0] + _BY_TYPE[1] + _BY_TYPE[2] + _BY_TYPE[3]
_GOOD_SHAPES: set = set()   # the typed fields' types of events found right (a loader writes a few)
MAX_SHAPES = 1024


def _types_ok(ev: dict) -> bool:
    """Every typed field of a connection event right, in one C-level pass
    for a shape seen before, else a few (the loops below then only run to
    name what is wrong)."""
    shape = tuple(map(type, map(ev.get, _TYPED)))
    if shape in _GOOD_SHAPES:
        return True
    get = ev.get
    ok = (set(map(type, map(get, _BY_TYPE[0]))) <= _INT and set(map(type, map(get, _BY_TYPE[1]))) <= _STR
          and set(map(type, map(get, _BY_TYPE[2]))) <= _INT_NONE
          and set(map(type, map(get, _BY_TYPE[3]))) <= _STR_NONE)
    if ok and len(_GOOD_SHAPES) < MAX_SHAPES:
        _GOOD_SHAPES.add(shape)
    return ok


# The shapes of connection events check_event accepted: their keys in order,
# then their values' types, none a float, an object or a list (all that
# orjson and the json module read alike, nesting nothing). Every typed field
# of an event of a known shape is of the right type, whitelisted too: only
# its values are left to check (known_connection_ok).
KNOWN_SHAPES: set = set()
_FLAT = {int, str, bool, type(None)}
_FAMILIES = ("ipv4", "ipv6")
_from_iso = datetime.fromisoformat


def shape_of(ev: dict) -> tuple:
    """A decoded object's keys in order, then the types of their values."""
    return (*ev, *map(type, ev.values()))


def remember_shape(ev: dict, shape: tuple) -> None:
    """After check_event accepted ev (of that shape): a flat connection
    event's shape is known from now on (a loader writes a few; at most MAX_SHAPES)."""
    if (ev["type"] == "connection" and len(KNOWN_SHAPES) < MAX_SHAPES
            and _FLAT.issuperset(shape[len(ev):])):
        KNOWN_SHAPES.add(shape)


def known_connection_ok(ev: dict) -> bool:
    """For ev of a shape in KNOWN_SHAPES: True when check_event would accept
    it, False when check_event must decide (and name what is wrong). The
    values its shape cannot vouch for, checked as check_event does."""
    global _last_ts
    ts = ev["ts"]
    if ev["v"] != SCHEMA_VERSION or ev["type"] != "connection" or ts[-1:] != "Z":
        return False
    try:
        # parse_iso's own first step for the events' form (it stands for
        # parse_iso where it succeeds), without two calls around it;
        # remembered as event_seconds does, for the rules.
        _last_ts = (ts, _from_iso(ts).timestamp())
    except Exception:   # noqa: BLE001 (whatever it is, check_event says it)
        return False
    # 0-65535 and 0-4294967295 by their bits: a negative int shifts to -1.
    return (not ((ev["pid"] | ev["uid"]) >> 32 or ev["dport"] >> 16) and ev["family"] in _FAMILIES
            and (KNOWN_IPS.get(ev["daddr"]) or parse_ip(ev["daddr"])) is not None)


def _check_connection(ev: dict) -> None:
    # `type(v) is t`: JSON gives exact types, and a bool is then not an int.
    if _types_ok(ev):
        _check_values(ev)
        return
    for k, t in _CONN_TYPES.items():
        v = ev.get(k)
        if type(v) is not t:
            raise BadLine(f"connection event: {k} must be {t.__name__}, got {_show(v)}")
    for k, t in _CONN_NULLABLE.items():
        v = ev.get(k)
        if v is not None and type(v) is not t:
            raise BadLine(f"connection event: {k} must be {t.__name__} or null, got {_show(v)}")
    _check_values(ev)


def _check_values(ev: dict) -> None:
    if not 0 <= ev["dport"] <= 65535:
        raise BadLine(f"connection event: dport {ev['dport']} outside 0-65535")
    if ev["family"] not in _FAMILIES:
        raise BadLine(f"connection event: family {_show(ev['family'])}")
    for k in ("pid", "uid"):
        if not 0 <= ev[k] < 1 << 32:
            raise BadLine(f"connection event: {k} {ev[k]} outside 0-4294967295")
    _address("connection event: daddr", ev["daddr"])
    w = ev.get("whitelisted")
    if w is not None and not isinstance(w, (str, bool)):
        raise BadLine(f"connection event: whitelisted must be a string, got {_show(w)}")


def _check_flow(ev: dict) -> None:
    _address("flow event: src", ev.get("src"))
    for k in _FLOW_NUMBERS:
        v = ev.get(k, 0)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v <= _MAX_NUMBER:
            raise BadLine(f"flow event: {k} must be a number 0-{_MAX_NUMBER:g}, got {_show(v)}")


def _check_aggregate(ev: dict) -> None:
    if ev.get("kind") not in ("syn", "udp", "icmp"):
        raise BadLine(f"flow_aggregate event: kind must be syn, udp or icmp, got {_show(ev.get('kind'))}")
    d = ev.get("dport")
    if d is not None and (isinstance(d, bool) or not isinstance(d, int) or not 0 <= d <= 65535):
        raise BadLine(f"flow_aggregate event: dport must be 0-65535 or null, got {_show(d)}")
    for k in ("packets", "window_s", "pps"):
        v = ev.get(k, 0)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v <= _MAX_NUMBER:
            raise BadLine(f"flow_aggregate event: {k} must be a number 0-{_MAX_NUMBER:g}, got {_show(v)}")


def _address(what: str, value) -> None:
    if not isinstance(value, str):
        raise BadLine(f"{what} must be an address string, got {_show(value)}")
    if parse_ip(value) is None:
        raise BadLine(f"{what} {_show(value)} is not an IP address")


def _show(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


