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


def test_expiry_follows_re_bans_and_unbans_without_scanning(tmp_path):
    """expire() pops a heap of expiries: a re-ban moves a ban's end, an
    unban forgets it, a restore brings the ends back."""
    now = [1_000_000.0]
    nets = set()

    class Maps:
        def add(self, net, expires_at=None):
            nets.add(str(net))
        def add_many(self, items):
            for net, exp in items:
                self.add(net, exp)
            return [None] * len(items)
        def remove(self, net):
            had = str(net) in nets
            nets.discard(str(net))
            return had
        def counters(self, net):
            return None

    events = []
    def table():
        return BanTable(RecordsStore(tmp_path), Maps(), WhitelistFile(tmp_path / "fc.json"),
                        lambda ty, **f: events.append((ty, f)), lambda m: None,
                        clock=lambda: now[0], protected=lambda: Protected())
    t = table()
    for ip, ttl in (("203.0.113.1", 10), ("203.0.113.2", 20), ("203.0.113.3", 10), ("203.0.113.4", None)):
        t.ban_now({"action": "ban", "ip": ip, **({"ttl_seconds": ttl} if ttl else {})})
    t.ban_now({"action": "ban", "ip": "203.0.113.1", "ttl_seconds": 30})   # moved later
    t.ban_now({"action": "unban", "ip": "203.0.113.3"})                     # gone before its end
    now[0] += 15
    assert t.expire() == 0 and set(t.bans) == {"203.0.113.1", "203.0.113.2", "203.0.113.4"}
    now[0] += 10
    assert t.expire() == 1 and "203.0.113.2" not in t.bans and "203.0.113.2/32" not in nets
    t2 = table()   # a restart: the ends come back from banned_ips.json
    assert t2.restore() == 2
    now[0] += 10
    assert t2.expire() == 1 and set(t2.bans) == {"203.0.113.4"}
    assert ("unban", "203.0.113.1", "expired") in [(ty, f["ip"], f["result"]) for ty, f in events]
