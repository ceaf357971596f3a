"""Kernel test of the XDP drop path's per-CPU cache of banned IPv4 sources
(ban_cache, ban_gen: bpf/netsentinel.h): real frames through the lab's veth,
the loader's own counter readback, the pinned maps read with bpftool.

The loader turns the cache on with a random slot hash; the test then sets
the multiplier to 2^22, which keeps only the address's first 10 bits, so
the lab's two peer addresses share one slot and the second evicts the first.
"""

from __future__ import annotations

import json
import socket
import struct

import pytest

from netlab import (lab,  # noqa: F401  (module-scoped fixture)
                    LoaderProc, ban_event, kernel_test_skip_reason, read_json, sh, unload_all,
                    validate, wait_until, write_commands)
from netsentinel.testing.frames import inject, udp_frame

SKIP = kernel_test_skip_reason()
pytestmark = pytest.mark.skipif(SKIP is not None, reason=str(SKIP))

SLOT = struct.Struct("<QQQQIIII")   # struct ns_ban_cache
GEN = struct.Struct("<QII")         # struct ns_ban_gen


@pytest.fixture
def loader(lab, tmp_path):
    cfg = tmp_path / "filter_config.json"
    cfg.write_text("{}")
    lp = LoaderProc(lab, tmp_path, cfg)
    validate(lp.wait_started())
    yield lp
    if lp.proc.poll() is None:
        lp.stop()
    unload_all(lab)


def _dump(path: str) -> list:
    return json.loads(sh("bpftool", "-j", "map", "dump", "pinned", path).stdout)


def _raw(hexes: list[str]) -> bytes:
    return bytes(int(h, 16) for h in hexes)


def _slots(lab) -> list[tuple]:
    """Every slot on every CPU holding drops: (cpu, gen, expires, drops, last_drop_ns, addr, prefixlen).
    (A slot a source took with its first drop, counted on the ban, holds none.)"""
    out = []
    for entry in _dump(f"{lab.pin_root}/{lab.dut_if}/ban_cache"):
        for v in entry["values"]:
            gen, exp, drops, last, addr, plen, _tick, _pad = SLOT.unpack(_raw(v["value"]))
            if gen and drops:
                out.append((v["cpu"], gen, exp, drops, last, socket.inet_ntoa(struct.pack("<I", addr)), plen))
    return out


def _ban_value_drops(lab, ip: str) -> int:
    key = list(struct.pack("<I", 32)) + list(socket.inet_aton(ip))
    for entry in _dump(f"{lab.pin_root}/{lab.dut_if}/bans4"):
        if [int(h, 16) for h in entry["key"]] == key:
            return struct.unpack_from("<Q", _raw(entry["value"]))[0]
    raise AssertionError(f"{ip}/32 not in bans4")


def _one_slot_for_every_peer(lab) -> None:
    path = f"{lab.pin_root}/{lab.dut_if}/ban_gen"
    gen, mult, _ = GEN.unpack(_raw(_dump(path)[0]["value"]))
    assert gen >= 1 and mult & 1, "the loader turns the cache on with an odd multiplier"
    value = GEN.pack(gen + 1, 1 << 22, 0)
    sh("bpftool", "map", "update", "pinned", path, "key", "hex", "00", "00", "00", "00",
       "value", "hex", *(f"{b:02x}" for b in value))


def _inject(lab, src: str, n: int) -> None:
    """n UDP frames from src, sent from CPU 0 (so received there: a veth runs
    its receive path on the sending CPU)."""
    mac = {ns: json.loads(sh("ip", "-n", ns, "-j", "link", "show", ifc).stdout)[0]["address"]
           for ns, ifc in ((lab.dut, lab.dut_if), (lab.peer, lab.peer_if))}
    frame = udp_frame(mac[lab.dut], mac[lab.peer], src, lab.dut4)
    inject(lab, lab.peer, lab.peer_if, frame, n, cpu=0)


def _ban_drops(lp, ip: str) -> int:
    return (read_json(lp.records / "banned_ips.json", {}).get(ip) or {}).get("drops", 0)


def test_cached_drops_are_counted_exactly_flushed_on_eviction_and_a_lift_is_at_once(lab, loader):
    _one_slot_for_every_peer(lab)
    write_commands(loader.records, [{"action": "ban", "ip": lab.peer4}, {"action": "ban", "ip": lab.peer4b}])
    ban_event(loader, lab.peer4)
    ban_event(loader, lab.peer4b)

    # The first frame goes through the trie (counted on the ban) and fills the slot; the rest hit it.
    _inject(lab, lab.peer4, 5)
    wait_until(lambda: _ban_drops(loader, lab.peer4) == 5, 10, what="5 drops of the first peer in banned_ips.json")
    slots = _slots(lab)
    assert [(s[3], s[5], s[6]) for s in slots] == [(4, lab.peer4, 32)], slots
    assert _ban_value_drops(lab, lab.peer4) == 1

    # The second peer takes the slot: the first's 4 move to its ban's own value, nothing is lost.
    _inject(lab, lab.peer4b, 3)
    wait_until(lambda: _ban_drops(loader, lab.peer4b) == 3, 10, what="3 drops of the second peer")
    assert [(s[3], s[5]) for s in _slots(lab)] == [(2, lab.peer4b)]
    assert _ban_value_drops(lab, lab.peer4) == 5
    assert _ban_drops(loader, lab.peer4) == 5
    # The global total (per-CPU NS_CNT_XDP_DROPS), as the loader's status file shows it.
    wait_until(lambda: (read_json(loader.records / "loader_status.json", {}).get("stats") or {})
               .get("drops_total") == 8, 15, what="8 drops in the status file")

    # A lifted ban stops dropping at once, though its source still sits in the slot.
    write_commands(loader.records, [{"action": "unban", "ip": lab.peer4b}])
    ban_event(loader, lab.peer4b, type_="unban")
    assert lab.ping(lab.peer, lab.dut4, source=lab.peer4b), "a lifted ban still dropped (stale cache slot)"
    assert not lab.ping(lab.peer, lab.dut4, source=lab.peer4), "the first peer's ban holds"

    # A prefix ban: the slot holds the source and the ban's prefix; the readback finds the ban by it.
    net = lab.peer4b.rsplit(".", 1)[0] + ".128/25"
    write_commands(loader.records, [{"action": "ban", "ip": net}])
    ban_event(loader, net)
    _inject(lab, lab.peer4b, 3)
    wait_until(lambda: _ban_drops(loader, net) == 3, 10, what="3 drops on the /25")
    assert [(s[3], s[5], s[6]) for s in _slots(lab)] == [(2, lab.peer4b, 25)]
