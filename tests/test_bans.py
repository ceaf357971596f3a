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


class CountingMaps:
    """Kernel side: per-ban counters and totals that add up, as in enforce.bpf.c;
    `reads` counts per-ban counter reads."""
    def __init__(self):
        self.drops, self.reads = {}, 0
    def add(self, net, expires_at=None):
        self.drops.setdefault(str(net), 0)
    def add_many(self, items):
        for net, exp in items:
            self.add(net, exp)
        return [None] * len(items)
    def remove(self, net):
        return self.drops.pop(str(net), None) is not None
    def counters(self, net):
        self.reads += 1
        d = self.drops[str(net)]
        return BanCounters(d, 1.0 if d else None, 0, None)
    def totals(self):
        return {"xdp_seen": 0, "xdp_drops": sum(self.drops.values()), "connect_blocked": 0,
                "sendmsg_blocked": 0, "rule_drops": 0}


def test_counter_sync_reads_no_ban_while_the_kernel_totals_stand_still(tmp_path):
    """Idle at 50,000 bans must cost nothing: once a whole pass has copied
    every ban's counters and the kernel's totals have not moved since, a
    sync reads none; a drop anywhere starts a new pass that finds it."""
    maps = CountingMaps()
    table = BanTable(RecordsStore(tmp_path), maps, WhitelistFile(tmp_path / "fc.json"),
                     lambda *a, **k: None, lambda m: None, protected=lambda: Protected())
    for i in range(10):
        table.ban_now({"action": "ban", "ip": f"203.0.113.{i}"})
    assert table.sync_counters(limit=4) == 0 and maps.reads == 4
    table.sync_counters(limit=4), table.sync_counters(limit=4)
    assert maps.reads == 12   # the pass is complete (10 bans, slices of 4)
    table.sync_counters(limit=4)
    assert maps.reads == 12, "totals unchanged: no ban read"
    maps.drops["203.0.113.9/32"] = 3
    changed = sum(table.sync_counters(limit=4) for _ in range(3))
    assert changed == 1 and table.bans["203.0.113.9"]["drops"] == 3
    reads = maps.reads
    table.sync_counters(limit=4)
    assert maps.reads == reads
    saved = json.loads((tmp_path / "banned_ips.json").read_text())
    assert saved["203.0.113.9"]["drops"] == 3


def test_a_big_table_is_saved_from_cached_entries_and_stays_exact(tmp_path):
    """From COMPACT_FROM bans each ban's text is kept until it changes: the
    file must still be exactly the table, after bans, re-bans, unbans and
    counter changes."""
    from netsentinel.loader.bantable import COMPACT_FROM
    maps = CountingMaps()
    table = BanTable(RecordsStore(tmp_path), maps, WhitelistFile(tmp_path / "fc.json"),
                     lambda *a, **k: None, lambda m: None, protected=lambda: Protected())
    n = COMPACT_FROM + 50
    table.apply_external([{"action": "ban", "ip": f"11.0.{i >> 8}.{i & 255}", "source": "bench"}
                          for i in range(n)])
    path = tmp_path / "banned_ips.json"
    assert json.loads(path.read_text()) == table.bans and len(table.bans) == n
    table.ban_now({"action": "ban", "ip": "11.0.0.1", "reason": "re-ban, new reason \u00e9"})
    table.ban_now({"action": "unban", "ip": "11.0.0.2"})
    maps.drops["11.0.0.3/32"] = 5
    table.sync_counters(limit=None)
    saved = json.loads(path.read_text())
    assert saved == table.bans and saved["11.0.0.1"]["reason"] == "re-ban, new reason \u00e9"
    assert "11.0.0.2" not in saved and saved["11.0.0.3"]["drops"] == 5
