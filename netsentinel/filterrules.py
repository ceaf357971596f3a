"""XDP filter rules: the second kind of rule beside address bans.

A rule matches inbound packets on source prefix, protocol, source and
destination port ranges, TCP flags and ICMP type, and either drops them or
lets them pass and counts them. Rules are checked here, completely, before
any of them reaches the kernel map: a bad rule is refused with a reason,
never loaded half-way.

    {"id": "ssdp-reflection", "action": "drop", "src": "any", "proto": "udp",
     "sport": 1900, "reason": "SSDP amplification"}
    {"action": "count", "src": "198.51.100.0/24", "proto": "tcp",
     "tcp_flags": "SYN,!ACK", "dport": "1-1024"}
    {"action": "drop", "proto": "icmp", "icmp_type": 8, "src": "203.0.113.9"}
    {"action": "ratelimit", "proto": "tcp", "dport": 80, "rate_pps": 300}

A `ratelimit` rule passes the packets it matches up to `rate_pps` per second
(a token bucket of `burst` packets, default one second's worth) and drops
the rest, counting them as hits: the answer to an aggregate flood from
spoofed or many sources, where banning addresses would be pointless or
could be aimed at the addresses we need. On TCP it matches new connections
only (`tcp_flags` defaults to "SYN,!ACK"), so established ones are never
limited.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field

from .abi import FAMILY_V4, FAMILY_V6, MAX_RULES, PROTOS, RULE_ACTION, TCP_FLAGS
from .addresses import AddressError, Network, canonical, parse_target
from .errors import NetSentinelError
from .bancheck import MAX_REASON_CHARS, parse_ttl
from .netinfo import Protected

# The ICMP flavours imply an address family.
PROTO_FAMILY = {PROTOS["icmp"]: FAMILY_V4, PROTOS["icmpv6"]: FAMILY_V6}
FIELDS = {"id", "action", "src", "proto", "sport", "dport", "tcp_flags", "icmp_type", "reason",
          "source", "ttl_seconds", "created_at", "expires_at", "hits", "proposal_id", "rate_pps", "burst"}
RATE_MAX = 10_000_000   # packets/s a ratelimit rule may allow (and its burst)
ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,47}$")


class RuleRefused(NetSentinelError, ValueError):
    """A rule that will not be loaded; str() is the one-line reason."""


@dataclass
class FilterRule:
    id: str
    action: str
    src: Network | None
    proto: int
    sport: tuple[int, int] = (0, 65535)
    dport: tuple[int, int] = (0, 65535)
    flags_mask: int = 0
    flags_value: int = 0
    icmp_type: int | None = None
    extra: dict = field(default_factory=dict)
    rate_pps: int = 0      # ratelimit only
    burst: int = 0

    @property
    def family(self) -> int:
        if self.src is not None:
            return self.src.version
        return PROTO_FAMILY.get(self.proto, 0)

    def narrowed(self) -> bool:
        """Does it look at anything beyond the source address?"""
        return bool(self.proto or self.sport != (0, 65535) or self.dport != (0, 65535)
                    or self.flags_mask or self.icmp_type is not None)

    def to_json(self) -> dict:
        out = {"id": self.id, "action": self.action,
               "src": canonical(self.src) if self.src else "any",
               "proto": next(k for k, v in PROTOS.items() if v == self.proto)}
        for name, rng in (("sport", self.sport), ("dport", self.dport)):
            if rng != (0, 65535):
                out[name] = rng[0] if rng[0] == rng[1] else f"{rng[0]}-{rng[1]}"
        if self.flags_mask:
            out["tcp_flags"] = ",".join(
                (n if self.flags_value & bit else f"!{n}") for n, bit in TCP_FLAGS.items()
                if self.flags_mask & bit)
        if self.icmp_type is not None:
            out["icmp_type"] = self.icmp_type
        if self.action == "ratelimit":
            out["rate_pps"], out["burst"] = self.rate_pps, self.burst
        out.update(self.extra)
        return out


def _port_range(name: str, value) -> tuple[int, int]:
    if value is None or value == "any":
        return (0, 65535)
    if isinstance(value, bool):
        raise RuleRefused(f"{name} must be a port or a range like \"1000-2000\"")
    if isinstance(value, int):
        lo = hi = value
    elif isinstance(value, str) and re.fullmatch(r"\d{1,5}(-\d{1,5})?", value.strip()):
        parts = value.strip().split("-")
        lo, hi = int(parts[0]), int(parts[-1])
    else:
        raise RuleRefused(f"{name} must be a port or a range like \"1000-2000\", got {value!r}")
    if not (0 <= lo <= hi <= 65535):
        raise RuleRefused(f"{name} {value!r} is not a range within 0-65535")
    return (lo, hi)


def _tcp_flags(value) -> tuple[int, int]:
    if value is None:
        return (0, 0)
    if not isinstance(value, str) or not value.strip():
        raise RuleRefused('tcp_flags must be like "SYN,!ACK"')
    mask = val = 0
    for part in value.upper().replace(" ", "").split(","):
        neg = part.startswith("!")
        bit = TCP_FLAGS.get(part.lstrip("!"))
        if bit is None:
            raise RuleRefused(f"unknown TCP flag {part!r} (known: {', '.join(TCP_FLAGS)})")
        if mask & bit:
            raise RuleRefused(f"TCP flag {part.lstrip('!')} given twice")
        mask |= bit
        if not neg:
            val |= bit
    return (mask, val)


def parse_rule(raw: object) -> FilterRule:
    """Shape checks: every field, every value; unknown fields are refused."""
    if not isinstance(raw, dict):
        raise RuleRefused(f"a rule must be a JSON object, got {type(raw).__name__}")
    unknown = set(raw) - FIELDS
    if unknown:
        raise RuleRefused(f"unknown rule field(s): {', '.join(sorted(map(str, unknown)))}")
    action = raw.get("action")
    if not isinstance(action, str) or action not in RULE_ACTION:
        raise RuleRefused(f"rule action must be 'drop', 'count' or 'ratelimit', got {action!r}")
    rid = raw.get("id") or f"r-{uuid.uuid4().hex[:8]}"
    if not isinstance(rid, str) or not ID_RE.match(rid):
        raise RuleRefused(f"rule id {rid!r} must be 1-48 letters, digits, '.', '_' or '-'")
    src_raw = raw.get("src", "any")
    try:
        src = None if src_raw in (None, "any") else parse_target(src_raw)
    except AddressError as e:
        raise RuleRefused(f"src: {e}") from None
    proto_raw = raw.get("proto", "any")
    if not isinstance(proto_raw, str) or proto_raw not in PROTOS:
        raise RuleRefused(f"proto must be one of {', '.join(PROTOS)}, got {proto_raw!r}")
    proto = PROTOS[proto_raw]
    sport, dport = _port_range("sport", raw.get("sport")), _port_range("dport", raw.get("dport"))
    if (sport != (0, 65535) or dport != (0, 65535)) and proto not in (6, 17):
        raise RuleRefused("ports need proto 'tcp' or 'udp'")
    rate, burst = _rate(action, raw, proto_raw)
    flags_raw = raw.get("tcp_flags")
    if action == "ratelimit" and proto == PROTOS["tcp"] and flags_raw is None:
        flags_raw = "SYN,!ACK"   # new connections; established ones are never limited
    mask, val = _tcp_flags(flags_raw)
    if mask and proto != PROTOS["tcp"]:
        raise RuleRefused("tcp_flags need proto 'tcp'")
    icmp = raw.get("icmp_type")
    if icmp is not None:
        if proto not in PROTO_FAMILY:
            raise RuleRefused("icmp_type needs proto 'icmp' or 'icmpv6'")
        if isinstance(icmp, bool) or not isinstance(icmp, int) or not 0 <= icmp <= 255:
            raise RuleRefused(f"icmp_type must be 0-255, got {icmp!r}")
    if src is not None and proto in PROTO_FAMILY and src.version != PROTO_FAMILY[proto]:
        raise RuleRefused(f"proto {proto_raw} does not fit an IPv{src.version} source")
    extra = {k: raw[k] for k in ("reason", "source", "ttl_seconds", "proposal_id") if k in raw}
    for name, limit in (("reason", MAX_REASON_CHARS), ("source", 128), ("proposal_id", 128)):
        value = extra.get(name)
        if value is not None and (not isinstance(value, str) or len(value) > limit):
            raise RuleRefused(f"{name} must be a string of at most {limit} characters")
    if "ttl_seconds" in extra:
        try:
            extra["ttl_seconds"] = parse_ttl(extra["ttl_seconds"])
        except ValueError as e:
            raise RuleRefused(str(e)) from None
    return FilterRule(rid, action, src, proto, sport, dport, mask, val, icmp, extra, rate, burst)


def _rate(action: str, raw: dict, proto_raw) -> tuple[int, int]:
    """(rate_pps, burst) of a ratelimit rule; (0, 0) for the others."""
    if action != "ratelimit":
        if "rate_pps" in raw or "burst" in raw:
            raise RuleRefused("rate_pps and burst belong to action 'ratelimit'")
        return (0, 0)
    if proto_raw not in ("tcp", "udp", "icmp", "icmpv6"):
        raise RuleRefused("a ratelimit rule needs proto 'tcp', 'udp', 'icmp' or 'icmpv6'")
    out = []
    for name in ("rate_pps", "burst"):
        v = raw.get(name)
        if v is None and name == "burst":
            v = out[0]   # one second's worth
        if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= RATE_MAX:
            raise RuleRefused(f"{name} must be a whole number of packets from 1 to {RATE_MAX}, got {v!r}")
        out.append(v)
    return (out[0], out[1])


def check_rule_policy(rule: FilterRule, protected: Protected, ssh_ports=(22,)) -> None:
    """Refuse drop rules that would cut the host off or lock its owner out."""
    if rule.action != "drop":
        return
    if not rule.narrowed():
        if rule.src is None:
            raise RuleRefused("a drop rule with no criteria would drop all inbound traffic; "
                              "use an address ban for one source")
        hit = protected.covering(rule.src)
        if hit:
            raise RuleRefused(f"drops everything from {canonical(hit[0])}, {hit[1]}")
    could_hit_tcp = rule.proto in (0, 6)
    ssh = [p for p in ssh_ports if rule.dport[0] <= p <= rule.dport[1]]
    if could_hit_tcp and ssh and not (rule.flags_mask and rule.flags_value & TCP_FLAGS["RST"]):
        if rule.src is None or protected.covering(rule.src):
            raise RuleRefused(f"could drop SSH (port {ssh[0]}) from any source or a protected "
                              "address; narrow src or dport")


def validate_rules(raws: list, protected: Protected, ssh_ports=(22,)) -> list[FilterRule]:
    """All or nothing: every rule valid, ids unique, count within the map."""
    if len(raws) > MAX_RULES:
        raise RuleRefused(f"at most {MAX_RULES} rules fit the kernel map")
    rules, seen = [], set()
    for raw in raws:
        r = parse_rule(raw)
        check_rule_policy(r, protected, ssh_ports)
        if r.id in seen:
            raise RuleRefused(f"duplicate rule id {r.id!r}")
        seen.add(r.id)
        rules.append(r)
    return rules
