"""The whitelist in filter_config.json: trusted addresses, processes, ports.

Whitelisted connections are not emitted by the loader (or, when
"whitelisted_connections" is "mark", are emitted with "whitelisted" set to
the reason, e.g. "ip 10.0.0.0/8" or "port 53"), and a whitelisted address
can never be banned. The file is hot-reloaded: a change takes effect on the
next event; a broken file is refused with a one-line message and the
previous whitelist stays in force.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Callable

from .addresses import AddressError, Network, canonical, overlaps_any, parse_target
from .errors import ConfigError
from .store import RecordsStore, StoreError
from .watch import FileSignature

DEFAULT_CONFIG: dict[str, Any] = {
    "version": 1,
    "trusted_ips": [],
    "trusted_processes": [],
    "trusted_ports": [],
    "whitelisted_connections": "hide",
    "protect_ssh_ports": [22],
    "min_ban_prefix": {"ipv4": 8, "ipv6": 32},
}
KINDS = {"ip": "trusted_ips", "process": "trusted_processes", "port": "trusted_ports"}
# A whitelisted network is never reported and never banned: 0.0.0.0/0 would
# hide every connection and block every ban. Entries broader than these are
# refused (the same floor as the default min_ban_prefix).
MIN_TRUST_PREFIX = {4: 8, 6: 32}


def _port(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ConfigError(f"port {value!r} is not a number")
    try:
        port = int(value)
    except ValueError:
        raise ConfigError(f"port {value!r} is not a number") from None
    if not 1 <= port <= 65535:
        raise ConfigError(f"port {port} is outside 1-65535")
    return port


def _process(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"process {value!r} must be a name or an absolute exe path")
    value = value.strip()
    if not value.startswith("/") and len(value) > 15:
        # The kernel's comm is 15 characters; a longer name would never match.
        raise ConfigError(f"process name {value!r} is longer than 15 characters; "
                          "use the absolute exe path instead")
    return value


def normalize_entry(kind: str, value: Any) -> Any:
    """Validate one whitelist entry of a kind (ip, process, port)."""
    if kind == "ip":
        try:
            net = parse_target(value)
        except AddressError as e:
            raise ConfigError(str(e)) from None
        floor = MIN_TRUST_PREFIX[net.version]
        if net.prefixlen < floor:
            raise ConfigError(f"{canonical(net)} is too broad to trust: whitelist entries need a "
                              f"prefix of /{floor} or longer (it would hide every connection "
                              "and block every ban there)")
        return canonical(net)
    if kind == "process":
        return _process(value)
    if kind == "port":
        return _port(value)
    raise ConfigError(f"unknown whitelist kind {kind!r} (ip, process, port)")


def validate_config(raw: Any) -> dict:
    """Return a complete, normalised config or raise ConfigError."""
    if not isinstance(raw, dict):
        raise ConfigError("filter_config.json must hold a JSON object")
    cfg = copy.deepcopy(DEFAULT_CONFIG)
    for key, value in raw.items():
        if key not in cfg:
            cfg[key] = value  # unknown keys are kept (other tools' settings)
            continue
        cfg[key] = value
    for kind, key in KINDS.items():
        if not isinstance(cfg[key], list):
            raise ConfigError(f"{key} must be a list")
        cfg[key] = [normalize_entry(kind, v) for v in cfg[key]]
    if cfg["whitelisted_connections"] not in ("hide", "mark"):
        raise ConfigError('whitelisted_connections must be "hide" or "mark"')
    if not isinstance(cfg["protect_ssh_ports"], list):
        raise ConfigError("protect_ssh_ports must be a list")
    cfg["protect_ssh_ports"] = [_port(p) for p in cfg["protect_ssh_ports"]]
    mbp = cfg["min_ban_prefix"]
    if not isinstance(mbp, dict):
        raise ConfigError("min_ban_prefix must be an object like {\"ipv4\": 8, \"ipv6\": 32}")
    for fam, limit in (("ipv4", 32), ("ipv6", 128)):
        v = mbp.get(fam, DEFAULT_CONFIG["min_ban_prefix"][fam])
        if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= limit:
            raise ConfigError(f"min_ban_prefix.{fam} must be an integer 0-{limit}")
        mbp[fam] = v
    return cfg


class Whitelist:
    """An immutable, validated view of the whitelist."""

    def __init__(self, cfg: dict | None = None):
        self.config = validate_config(cfg or {})
        self.networks: list[Network] = [parse_target(x) for x in self.config["trusted_ips"]]
        procs = self.config["trusted_processes"]
        self.exe_paths = {p for p in procs if p.startswith("/")}
        self.comms = {p for p in procs if not p.startswith("/")}
        self.ports = set(self.config["trusted_ports"])
        self.mark_only = self.config["whitelisted_connections"] == "mark"

    def trusted_network_for(self, net: Network) -> Network | None:
        """The trusted network that overlaps a ban target, if any."""
        return overlaps_any(net, self.networks)

    def match(self, *, daddr: str | None = None, dport: int | None = None,
              comm: str | None = None, exe: str | None = None) -> str | None:
        """Why a connection is whitelisted (a short reason), or None."""
        if daddr and self.networks:   # no address parsing when nothing is trusted
            try:
                target = parse_target(daddr)
            except AddressError:
                target = None
            if target is not None:
                hit = next((n for n in self.networks
                            if n.version == target.version and target.subnet_of(n)), None)
                if hit is not None:
                    return f"ip {canonical(hit)}"
        if dport is not None and dport in self.ports:
            return f"port {dport}"
        if exe and exe in self.exe_paths:
            return f"process {exe}"
        if comm and comm in self.comms:
            return f"process {comm}"
        return None


class WhitelistFile:
    """filter_config.json on disk, through the locked atomic store.

    A file that goes missing is an error, not an empty whitelist: the
    previous whitelist stays in force (deleting the file must not silently
    un-trust everything, nor make bans of trusted addresses possible). With
    no file at first start the defaults are used, with a warning."""

    def __init__(self, path: str | Path, warn: Callable[[str], None] | None = None):
        self.path = Path(path)
        self.store = RecordsStore(self.path.parent, warn=warn)
        self.name = self.path.name
        self._watch = FileSignature(self.store.path(self.name))
        self._current = Whitelist()
        self._seen = False
        self.last_error: str | None = None

    def load(self) -> Whitelist:
        """Read and validate; raises ConfigError/StoreError (file untouched)."""
        raw = self.store.read(self.name, default={}, on_corrupt="raise")
        return Whitelist(raw)

    def current(self) -> Whitelist:
        """Hot reload: re-read when the file changed; keep the old one on error."""
        if self._watch.changed() or not self._seen:
            first, self._seen = not self._seen, True
            if self.store.stat(self.name) is None:
                if first:
                    self.store.warn(f"{self.path} not found; starting with the default whitelist "
                                    "(nothing trusted but the protected SSH ports)")
                else:
                    self.last_error = f"{self.path} is missing"
                    self.store.warn(f"{self.path} is missing; keeping the previous whitelist "
                                    "(restore the file, or save an empty one to trust nothing)")
                return self._current
            try:
                self._current = self.load()
                if self.last_error:
                    self.store.warn(f"{self.name}: valid again, reloaded")
                self.last_error = None
            except (ConfigError, StoreError, OSError) as e:
                self.last_error = str(e)
                self.store.warn(f"{self.name}: {e}; keeping the previous whitelist")
        return self._current

    def edit(self, kind: str, value: Any, *, remove: bool = False) -> tuple[bool, Any]:
        """Add or remove one entry under the lock. Returns (changed, normalised value)."""
        key = KINDS.get(kind)
        if key is None:
            raise ConfigError(f"unknown whitelist kind {kind!r} (ip, process, port)")
        entry = normalize_entry(kind, value)
        result = {"changed": False}

        def change(cur: Any) -> dict | None:
            cfg = validate_config(cur)
            items = cfg[key]
            if remove and entry in items:
                items.remove(entry)
            elif not remove and entry not in items:
                items.append(entry)
            else:
                return None
            result["changed"] = True
            return cfg

        self.store.update(self.name, change, default={}, on_corrupt="raise")
        return result["changed"], entry

    def save(self, cfg: dict) -> dict:
        """Validate and write a whole config (the dashboard's editor)."""
        valid = validate_config(cfg)
        self.store.write(self.name, valid)
        return valid
