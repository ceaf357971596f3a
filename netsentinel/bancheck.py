"""Validation of ban/unban commands, shared by the loader (which enforces)
and the dashboard and analyzer (which refuse early with the same words).

A command as people write it in records/ban_commands.json:
    {"action": "ban", "ip": "1.2.3.4", "reason": "Malicious scan"}
    {"action": "ban", "ip": "10.9.0.0/16", "ttl_seconds": 3600}
    {"action": "unban", "ip": "1.2.3.4"}
Optional: reason, source, ttl_seconds, requested_at, id, threat_id, note.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .addresses import AddressError, Network, canonical, family_name, parse_target
from .errors import NetSentinelError
from .netinfo import Protected
from .timefmt import MAX_TTL_S
from .whitelist import Whitelist

ACTIONS = ("ban", "unban")
MAX_TTL = MAX_TTL_S
MAX_IP_CHARS = 64
MAX_NAME_CHARS = 128
MAX_REASON_CHARS = 2000


class BanRefused(NetSentinelError, ValueError):
    """A command that will not be applied; str() is the one-line reason."""


@dataclass
class BanCommand:
    action: str
    net: Network
    reason: str | None
    source: str
    ttl_seconds: int | None

    @property
    def key(self) -> str:
        return canonical(self.net)


def _text_field(raw: dict, name: str, limit: int) -> str | None:
    value = raw.get(name)
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = str(value)  # a number written for a text: harmless, keep it as text
    if not isinstance(value, str):
        raise BanRefused(f"{name} must be a string, got {type(value).__name__}")
    if len(value) > limit:
        raise BanRefused(f"{name} is {len(value)} characters long (at most {limit})")
    return value


def parse_ttl(ttl: object) -> int | None:
    """None (permanent) or whole seconds in 1..MAX_TTL. Refuses NaN,
    Infinity, booleans, strings and sub-second values (0.5 used to become
    int 0, i.e. a permanent ban); a fraction above one second is dropped."""
    if ttl is None:
        return None
    if (isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or not math.isfinite(ttl)
            or ttl <= 0 or ttl > MAX_TTL):
        raise BanRefused(f"ttl_seconds must be a positive number of seconds up to {MAX_TTL} "
                         f"(10 years), got {str(ttl)[:40]}; leave it out for a permanent ban")
    if ttl < 1:
        raise BanRefused(f"ttl_seconds must be a positive number of seconds, at least 1, got {ttl}")
    return int(ttl)


def parse_command(raw: object) -> BanCommand:
    """Shape and address checks only (no host policy). Total: any JSON value
    gives a BanCommand or BanRefused, never another exception."""
    if not isinstance(raw, dict):
        raise BanRefused(f"a command must be a JSON object, got {type(raw).__name__}")
    action = raw.get("action")
    if action not in ACTIONS:
        shown = repr(action) if isinstance(action, str) or action is None else type(action).__name__
        raise BanRefused(f"unknown action {shown[:60]} (expected 'ban' or 'unban')")
    if "ip" not in raw:
        raise BanRefused("missing 'ip'")
    ip = raw["ip"]
    if isinstance(ip, str) and len(ip) > MAX_IP_CHARS:
        raise BanRefused(f"ip is {len(ip)} characters long; an address or CIDR is at most "
                         f"{MAX_IP_CHARS}")
    try:
        net = parse_target(ip)
    except AddressError as e:
        raise BanRefused(str(e)) from None
    ttl = parse_ttl(raw.get("ttl_seconds"))
    reason = _text_field(raw, "reason", MAX_REASON_CHARS)
    source = _text_field(raw, "source", MAX_NAME_CHARS) or "manual"
    for name in ("id", "threat_id", "requested_at", "note"):
        _text_field(raw, name, MAX_REASON_CHARS if name == "note" else MAX_NAME_CHARS)
    return BanCommand(action, net, reason, source, ttl)


def check_policy(cmd: BanCommand, whitelist: Whitelist, protected: Protected) -> None:
    """Refuse bans that are over-broad or would lock the owner out."""
    if cmd.action != "ban":
        return
    net = cmd.net
    fam = family_name(net)
    minimum = whitelist.config["min_ban_prefix"][fam]
    if net.prefixlen < minimum:
        raise BanRefused(f"{canonical(net)} is too broad: {fam} bans need a prefix of /{minimum} "
                         "or longer (min_ban_prefix in filter_config.json)")
    if net.network_address.is_unspecified:
        raise BanRefused(f"{canonical(net)} is the unspecified address")
    if net.network_address.is_multicast:
        raise BanRefused(f"{canonical(net)} is a multicast range; bans match source addresses")
    trusted = whitelist.trusted_network_for(net)
    if trusted is not None:
        raise BanRefused(f"{canonical(net)} overlaps whitelisted {canonical(trusted)}")
    hit = protected.covering(net)
    if hit is not None:
        raise BanRefused(f"{canonical(net)} covers {canonical(hit[0])}, {hit[1]}")


def validate(raw: object, whitelist: Whitelist, protected: Protected) -> BanCommand:
    cmd = parse_command(raw)
    check_policy(cmd, whitelist, protected)
    return cmd
