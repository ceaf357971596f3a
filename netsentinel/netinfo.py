"""Facts about this host's network that keep its owner from being locked out:
its own addresses, its default gateways, the peers of live SSH sessions, and
the interface that carries the default route."""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass, field

from . import netlink
from .addresses import Network, parse_target

# How stale the protected set may be: a new SSH session or address of this
# host is protected from bans within this many seconds.
PROTECTED_TTL_S = 5.0


def _known(look, *args) -> list:
    """A netlink look, [] when the kernel refuses it (as a failed `ip` was)."""
    try:
        return look(*args)
    except OSError:
        return []


def default_route_interface() -> str | None:
    """The interface holding the IPv4 default route (else IPv6), or None."""
    for fam in (socket.AF_INET, socket.AF_INET6):
        for _gw, oif in _known(netlink.default_routes, fam):
            try:
                return socket.if_indextoname(oif) if oif else None
            except OSError:
                continue
    return None


def interface_exists(name: str) -> bool:
    try:
        socket.if_nametoindex(name)
        return True
    except OSError:
        return False


def _targets(addresses) -> list[Network]:
    nets = []
    for a in addresses:
        try:
            nets.append(parse_target(a))
        except ValueError:
            continue
    return nets


def local_addresses() -> list[Network]:
    return _targets(_known(netlink.addresses))


def default_gateways() -> list[Network]:
    return _targets(gw for fam in (socket.AF_INET, socket.AF_INET6)
                    for gw, _oif in _known(netlink.default_routes, fam) if gw)


def ssh_peers(ports: list[int] | tuple[int, ...] = (22,)) -> list[Network]:
    """Remote ends of ESTABLISHED TCP sessions on local SSH ports (an IPv4
    peer of a dual-stack listener as the IPv4 address a ban would name)."""
    return _targets(_known(netlink.tcp_peers, list(ports)))


@dataclass
class Protected:
    """Addresses a ban must never cover, each with why."""
    entries: list[tuple[Network, str]] = field(default_factory=list)

    def covering(self, net: Network) -> tuple[Network, str] | None:
        for p, why in self.entries:
            if p.version == net.version and net.overlaps(p):
                return p, why
        return None


RESOLV_CONFS = ("/etc/resolv.conf", "/run/systemd/resolve/resolv.conf")
# Never a ban target whatever the evidence: cloud instance metadata (link-local)
# and the limited broadcast address.
ALWAYS_PROTECTED = (("169.254.169.254", "the cloud instance-metadata address"),
                    ("fd00:ec2::254", "the cloud instance-metadata address"),
                    ("255.255.255.255", "the broadcast address"))


def config_lines(path: str, limit: int = 65536) -> list[str]:
    """The lines of a small system config file ([] if it cannot be read)."""
    try:
        with open(path) as f:
            return f.read(limit).splitlines()
    except OSError:
        return []


def resolvers(paths=None) -> list[Network]:
    """The DNS servers this host uses (nameserver lines; the stub resolver's
    upstreams too where systemd-resolved keeps them)."""
    out: list[Network] = []
    for path in RESOLV_CONFS if paths is None else paths:
        for line in config_lines(path):
            parts = line.split()
            if len(parts) >= 2 and parts[0] == "nameserver":
                try:
                    net = parse_target(parts[1].split("%")[0])
                except ValueError:
                    continue
                if net not in out:
                    out.append(net)
    return out


def protected_addresses(ssh_ports=(22,)) -> Protected:
    entries: list[tuple[Network, str]] = []
    entries += [(n, "a DNS resolver this host uses") for n in resolvers()]
    entries += [(parse_target(a), why) for a, why in ALWAYS_PROTECTED]
    entries += [(n, "an address of this machine") for n in local_addresses()]
    entries += [(parse_target("127.0.0.0/8"), "loopback"), (parse_target("::1"), "loopback")]
    entries += [(n, "the default gateway") for n in default_gateways()]
    entries += [(n, "the peer of a live SSH session (owner lock-out protection)")
                for n in ssh_peers(list(ssh_ports))]
    return Protected(entries)


class ProtectedCache:
    """protected_addresses() at most once per ttl seconds (per set of SSH
    ports): each look is four netlink dumps and two config files read, too
    much per command. The one policy for every writer of ban commands: a new
    SSH session or address is protected within PROTECTED_TTL_S."""

    def __init__(self, ttl: float = PROTECTED_TTL_S):
        self.ttl = ttl
        self._lock = threading.Lock()
        self._at = 0.0
        self._key: tuple | None = None
        self._value: Protected | None = None

    def get(self, ssh_ports=(22,)) -> Protected:
        key = tuple(ssh_ports)
        with self._lock:
            if self._value is not None and key == self._key and time.monotonic() - self._at < self.ttl:
                return self._value
        return self.refresh(key)

    def refresh(self, ssh_ports=(22,)) -> Protected:
        """Look now and keep the result. The look runs outside the lock, so
        a reader meanwhile gets the set it holds while that is fresh (a
        thread refreshing ahead of the TTL keeps commands from ever waiting
        for a look, loader/protect.py); a look older than the one kept is
        not kept."""
        key = tuple(ssh_ports)
        at = time.monotonic()   # before the look: its age errs on the old side
        value = protected_addresses(key)
        with self._lock:
            if self._value is None or self._at <= at:
                self._value, self._key, self._at = value, key, at
        return value
