"""Facts about this host's network that keep its owner from being locked out:
its own addresses, its default gateways, the peers of live SSH sessions, and
the interface that carries the default route."""

from __future__ import annotations

import ipaddress
import json
import subprocess
import threading
import time
from dataclasses import dataclass, field

from .addresses import Network, parse_target

# How stale the protected set may be: a new SSH session or address of this
# host is protected from bans within this many seconds.
PROTECTED_TTL_S = 5.0


def _ip_json(*args: str) -> list:
    try:
        out = subprocess.run(["ip", "-j", *args], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return []
    if out.returncode != 0 or not out.stdout.strip():
        return []
    try:
        return json.loads(out.stdout)
    except json.JSONDecodeError:
        return []


def default_route_interface() -> str | None:
    """The interface holding the IPv4 default route (else IPv6), or None."""
    for fam in ("-4", "-6"):
        for r in _ip_json(fam, "route", "show", "default"):
            if r.get("dev"):
                return r["dev"]
    return None


def interface_exists(name: str) -> bool:
    return bool(_ip_json("link", "show", "dev", name))


def local_addresses() -> list[Network]:
    nets = []
    for link in _ip_json("addr", "show"):
        for a in link.get("addr_info", []):
            try:
                nets.append(parse_target(a["local"]))
            except (KeyError, ValueError):
                continue
    return nets


def default_gateways() -> list[Network]:
    gws = []
    for fam in ("-4", "-6"):
        for r in _ip_json(fam, "route", "show", "default"):
            try:
                gws.append(parse_target(r["gateway"]))
            except (KeyError, ValueError):
                continue
    return gws


def _hex_addr(hexaddr: str) -> ipaddress._BaseAddress:
    raw = bytes.fromhex(hexaddr)
    if len(raw) == 4:
        return ipaddress.IPv4Address(raw[::-1])
    # /proc/net/tcp6 prints four host-order 32-bit words.
    words = [raw[i:i + 4][::-1] for i in range(0, 16, 4)]
    return ipaddress.IPv6Address(b"".join(words))


def ssh_peers(ports: list[int] | tuple[int, ...] = (22,)) -> list[Network]:
    """Remote ends of ESTABLISHED TCP sessions on local SSH ports."""
    peers = []
    for path in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = open(path).read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            parts = line.split()
            if len(parts) < 4 or parts[3] != "01":  # 01 = ESTABLISHED
                continue
            local, remote = parts[1], parts[2]
            if int(local.split(":")[1], 16) not in ports:
                continue
            try:
                peers.append(parse_target(str(_hex_addr(remote.split(":")[0]))))
            except ValueError:
                continue
    return peers


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
    ports): each look runs `ip -j` three times and reads /proc/net/tcp*, too
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
        for `ip -j`, loader/protect.py); a look older than the one kept is
        not kept."""
        key = tuple(ssh_ports)
        at = time.monotonic()   # before the look: its age errs on the old side
        value = protected_addresses(key)
        with self._lock:
            if self._value is None or self._at <= at:
                self._value, self._key, self._at = value, key, at
        return value
