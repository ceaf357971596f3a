"""Shared by the CrowdSec tests: the loader's real BanTable over kernel-map
stand-ins, with an address that stands for this host and a whitelisted one."""

from __future__ import annotations

import json

from netsentinel.addresses import parse_target
from netsentinel.loader.bantable import BanTable
from netsentinel.netinfo import Protected
from netsentinel.store import RecordsStore
from netsentinel.whitelist import WhitelistFile


class Maps:
    """The kernel ban maps as a set the test reads."""
    def __init__(self):
        self.nets = set()

    def add(self, net, expires_at=None):
        self.nets.add(str(net))

    def add_many(self, items):
        for net, _ in items:
            self.add(net)
        return [None] * len(items)

    def remove(self, net):
        had = str(net) in self.nets
        self.nets.discard(str(net))
        return had

    def counters(self, net):
        return None


OWN = "192.0.2.1"          # stands for an address of this host
TRUSTED = "198.51.100.9"   # whitelisted in filter_config.json


def table_for(root, maps):
    """The loader's BanTable over records in root; events and warnings kept on it."""
    cfg = root / "filter_config.json"
    if not cfg.exists():
        cfg.write_text(json.dumps({"trusted_ips": [TRUSTED]}))
    events, warnings = [], []
    prot = Protected([(parse_target(OWN), "an address of this machine")])
    t = BanTable(RecordsStore(root), maps, WhitelistFile(cfg), lambda ty, **f: events.append((ty, f)),
                 warnings.append, protected=lambda: prot)
    t.events, t.warnings = events, warnings
    return t
