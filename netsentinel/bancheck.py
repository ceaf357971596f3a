"""Validation of ban/unban commands, shared by the loader (which enforces)
and the dashboard and analyzer (which refuse early with the same words).

A command as people write it in records/ban_commands.json:
    {"action": "ban", "ip": "1.2.3.4", "reason": "Malicious scan"}
    {"action": "ban", "ip": "10.9.0.0/16", "ttl_seconds": 3600}
    {"action": "unban", "ip": "1.2.3.4"}
Optional: reason, source, ttl_seconds, requested_at, id, threat_id, note.
"""

from __future__ import annotations

from dataclasses import dataclass

from .addresses import AddressError, Network, canonical, family_name, parse_target
from .errors import NetSentinelError
from .netinfo import Protected
from .timefmt import check_ttl
from .whitelist import Whitelist

ACTIONS = ("ban", "unban")


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


def parse_command(raw: object) -> BanCommand:
    """Shape and address checks only (no host policy)."""
    if not isinstance(raw, dict):
        raise BanRefused(f"a command must be a JSON object, got {type(raw).__name__}")
    action = raw.get("action")
    if action not in ACTIONS:
        raise BanRefused(f"unknown action {action!r} (expected 'ban' or 'unban')")
    if "ip" not in raw:
        raise BanRefused("missing 'ip'")
    try:
        net = parse_target(raw["ip"])
    except AddressError as e:
        raise BanRefused(str(e)) from None
    ttl = raw.get("ttl_seconds")
    if ttl is not None:
        try:
            ttl = int(check_ttl(ttl))
        except ValueError as e:
            raise BanRefused(str(e)) from None
    reason = raw.get("reason")
    if reason is not None and not isinstance(reason, str):
        reason = str(reason)
    source = raw.get("source") or "manual"
    if not isinstance(source, str):
        source = str(source)
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
