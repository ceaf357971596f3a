"""Known-bad destination lists: plain files of IPs/CIDRs, one per line,
'#' starts a comment. Re-read when the file changes; a bad line is
reported once (file:line) and skipped, never fatal."""

from __future__ import annotations

import ipaddress
import time
from typing import Callable

from ..addresses import AddressError, canonical, parse_target
from ..watch import FileSignature
from .ipcache import MAX_CACHED, MAX_TEXT, parse_ip

CHECK_EVERY = 2.0  # seconds between stat() calls: a list may be long, events are many


class AddressList:
    def __init__(self, path: str, warn: Callable[[str], None]):
        self.path = path
        self.warn = warn
        self._watch = FileSignature(path, follow_symlinks=True)  # a list a person points us at
        self._next_check = 0.0
        # (version, prefixlen) -> set of network numbers, for O(prefix lengths) lookup
        self._nets: dict[tuple[int, int], set[int]] = {}
        self.size = 0
        # addr -> its entry or None, for the lists now loaded (emptied on
        # reload): most events go to destinations seen before.
        self._hits: dict[str, str | None] = {}
        self.reload()

    def reload(self) -> None:
        if not self._watch.changed():
            return
        if not self._watch.present:
            self.warn(f"known-bad list {self.path}: {self._watch.error}; treated as empty")
            self._nets, self.size, self._hits = {}, 0, {}
            return
        nets: dict[tuple[int, int], set[int]] = {}
        size = 0
        with open(self.path, encoding="utf-8", errors="replace") as f:
            for n, line in enumerate(f, 1):
                text = line.split("#", 1)[0].strip()
                if not text:
                    continue
                try:
                    net = parse_target(text)
                except AddressError as e:
                    self.warn(f"{self.path}:{n}: {e}; line skipped")
                    continue
                bits = net.max_prefixlen
                nets.setdefault((net.version, net.prefixlen), set()).add(
                    int(net.network_address) >> (bits - net.prefixlen) if net.prefixlen else 0)
                size += 1
        self._nets, self.size, self._hits = nets, size, {}

    def lookup(self, addr: str) -> str | None:
        """The list entry (canonical form) covering addr, or None."""
        now = time.monotonic()
        if now >= self._next_check:
            self._next_check = now + CHECK_EVERY
            self.reload()
        if not self._nets:
            return None
        try:
            return self._hits[addr]
        except KeyError:
            pass
        hit = self._find(addr)
        if len(addr) <= MAX_TEXT:
            if len(self._hits) >= MAX_CACHED:
                self._hits.clear()   # bounded: many distinct addresses start it afresh
            self._hits[addr] = hit
        return hit

    def _find(self, addr: str) -> str | None:
        ip = parse_ip(addr)
        if ip is None:
            return None
        if ip.version == 6 and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        value = int(ip)
        for (version, plen), numbers in self._nets.items():
            if version != ip.version:
                continue
            shift = ip.max_prefixlen - plen
            if (value >> shift if plen else 0) in numbers:
                cls = ipaddress.IPv4Network if version == 4 else ipaddress.IPv6Network
                return canonical(cls((value >> shift << shift, plen)))
        return None
