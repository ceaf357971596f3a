"""The loader's ban table without a kernel: counters copied back in slices."""

import json

from netsentinel.loader.bantable import BanTable
from netsentinel.kernel.enforcer import BanCounters
from netsentinel.netinfo import Protected
from netsentinel.store import RecordsStore
from netsentinel.whitelist import WhitelistFile


def test_ban_counters_are_synced_in_round_robin_slices(tmp_path):
    """A large ban table is copied from the kernel a slice per status cycle,
    so the loader's loop never stalls; every ban is reached in turn."""
    class Maps:  # the kernel side, as counters the test controls
        def __init__(self):
            self.drops = {}
        def add(self, net, expires_at=None):
            self.drops.setdefault(str(net), 0)
        def remove(self, net):
            return self.drops.pop(str(net), None) is not None
        def counters(self, net):
            return BanCounters(self.drops[str(net)], 1.0 if self.drops[str(net)] else None, 0, None)

    maps = Maps()
    table = BanTable(RecordsStore(tmp_path), maps, WhitelistFile(tmp_path / "fc.json"),
                     lambda *a, **k: None, lambda m: None, protected=lambda: Protected())
    for i in range(10):
        table.ban_now({"action": "ban", "ip": f"203.0.113.{i}"})
    for k in maps.drops:
        maps.drops[k] = 7
    assert table.sync_counters(limit=4) == 4
    assert sum(r["drops"] == 7 for r in table.bans.values()) == 4
    assert table.sync_counters(limit=4) == 4 and table.sync_counters(limit=4) == 2
    assert all(r["drops"] == 7 for r in json.loads((tmp_path / "banned_ips.json").read_text()).values())
