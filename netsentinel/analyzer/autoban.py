"""Who an inbound flood may auto-ban (issue 13): an auto-ban that cannot be
aimed at this host's own services.

Packet counts (SYNs, UDP datagrams, ICMP echoes) are spoofable: anyone can
send them bearing any address, including that of a server this host needs.
So, for a CRITICAL flood threat:

1. Never auto-banned, whatever the evidence, with the reason shown: an
   address this host connected to in the last 10 minutes, one it has an
   established TCP session with (either direction), its NTP servers and its
   configured upstreams (the LLM endpoint). Resolvers, own addresses,
   gateways and SSH peers are refused later by bancheck for every ban.
   (For evidence made of handshakes only the first and the last two apply:
   the sessions are the evidence.)
2. Evidence a spoofer cannot produce bans: completed handshakes
   (brute force, connection floods).
3. Spoofable evidence bans only a source that proved its address: it
   completed a TCP handshake with this host in the last minute (SYN-cookie
   handshakes included). Otherwise it is not banned, and why is said: the
   aggregate rate limit per port and protocol is the answer to it.

The decision is taken when the threat is written (the records flusher's
thread), from what the InboundView knows then.
"""

from __future__ import annotations

import glob
import ipaddress
import time
from typing import Callable
from urllib.parse import urlsplit

from .. import logfmt
from ..netinfo import config_lines
from .inbound import InboundView

WITHHELD_MAX = 4096    # threat ids whose withheld auto-block was said (each said once)

# Threat categories whose evidence is completed handshakes, not packet counts.
HANDSHAKE_EVIDENCE = frozenset({"brute_force"})
NTP_CONFS = ("/etc/chrony/chrony.conf", "/etc/chrony.conf", "/etc/chrony/sources.d/*.sources",
             "/etc/ntp.conf", "/etc/ntpsec/ntp.conf", "/etc/systemd/timesyncd.conf",
             "/etc/systemd/timesyncd.conf.d/*.conf", "/run/systemd/timesyncd.conf.d/*.conf")
REFRESH_S = 30.0


def _literal(text: str) -> str | None:
    try:
        return str(ipaddress.ip_address(text.strip("[]").split("%")[0]))
    except ValueError:
        return None


def ntp_servers(patterns=NTP_CONFS) -> list[str]:
    """NTP servers named by address in chrony, ntpd and timesyncd configs
    (names are not resolved here: a pool by name is covered when the host
    connects to it, which its NTP client does over UDP, not seen as a
    `connection`; name the addresses in the whitelist to be sure)."""
    out: list[str] = []
    for pattern in patterns:
        for path in sorted(glob.glob(pattern)):
            for line in config_lines(path):
                parts = line.split("#")[0].split()
                words = []
                if len(parts) >= 2 and parts[0] in ("server", "pool", "peer"):
                    words = parts[1:2]
                elif parts and parts[0].split("=", 1)[0] in ("NTP", "FallbackNTP"):
                    words = line.split("=", 1)[1].split() if "=" in line else []
                for w in words:
                    a = _literal(w)
                    if a and a not in out:
                        out.append(a)
    return out


def upstreams(cfg: dict) -> list[str]:
    """Addresses of the services the analyzer is configured to use (the LLM
    endpoint), when given by address."""
    host = cfg.get("host")
    if not isinstance(host, str) or not host:
        return []
    try:
        name = urlsplit(host if "//" in host else f"//{host}").hostname
    except ValueError:
        return []
    a = _literal(name or "")
    return [a] if a else []


class AutoBanPolicy:
    def __init__(self, view: InboundView, get_cfg: Callable[[], dict],
                 clock: Callable[[], float] = time.monotonic, ntp: Callable[[], list[str]] = ntp_servers):
        self.view, self.get_cfg, self.clock, self._ntp = view, get_cfg, clock, ntp
        self._never: dict[str, str] = {}
        self._at = -REFRESH_S
        self._said: dict[str, None] = {}
        self.withheld = 0

    def never(self, src: str) -> str | None:
        """Configured services that are never auto-banned, in words."""
        now = self.clock()
        if now - self._at >= REFRESH_S:
            never = {a: "an NTP server this host uses" for a in self._ntp()}
            never.update({a: "a configured upstream (the LLM endpoint)" for a in upstreams(self.get_cfg())})
            self._never, self._at = never, now
        return self._never.get(src)

    def refusal(self, threat: dict) -> str | None:
        """Why this flood threat's target must not be auto-banned, or None
        when it may be."""
        src = threat.get("target")
        if not isinstance(src, str):
            return "it names no address"
        handshakes = threat.get("category") in HANDSHAKE_EVIDENCE
        why = self.view.talked_to(src) or self.never(src) or (None if handshakes else self.view.session(src))
        if why:
            return f"never auto-banned: {why}; only the aggregate rate limit applies to it"
        if handshakes or self.view.proven(src):
            return None
        return ("spoofable evidence only (no TCP handshake completed from it in the last "
                "minute): not auto-banned; the aggregate rate limit per port and protocol answers it")

    def gate(self, threat: dict, warn: Callable[[str], None]) -> bool:
        """May the sink auto-ban this flood threat's target now? A refusal
        is counted and said once per threat, which stays pending for a person."""
        why = self.refusal(threat)
        if why is None:
            return True
        self.withheld += 1
        if threat.get("id") not in self._said:
            self._said[threat.get("id")] = None
            while len(self._said) > WITHHELD_MAX:
                self._said.pop(next(iter(self._said)))
            warn(f"auto-block of {threat.get('target')} withheld: {why}")
            logfmt.log("auto-block_withheld", "analyzer", ip=threat.get("target"),
                       threat=threat.get("id"), category=threat.get("category"), reason=why)
        return False
