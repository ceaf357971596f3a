#!/usr/bin/env python3
"""bench/xdp_holder.py - hold NetSentinel's XDP filter on one interface with a
ban map filled to a given size, or (--program floor) a bare XDP_DROP program
(a helper of bench/drop_rate.py; run as root inside the namespace that owns
the interface).

It uses the loader's own Enforcer (netsentinel/kernel/: the same BPF
program, the same attach code) but fills the bans4 LPM trie in batches of
100,000 through BPF_MAP_UPDATE_BATCH instead of the loader's per-command
path, so a million-prefix map is ready in seconds: the benchmark measures the
map lookup, not the command path. No cgroup hooks are attached.

Protocol: one JSON line on stdout once attached and filled
  {"ready": true, "xdp_mode": "native", "entries": N, "fill_s": 1.2}
then, for each line "totals" on stdin, one line with the global counters
  {"xdp_seen": n, "xdp_drops": n, ...}
EOF on stdin (or SIGTERM) detaches everything and exits.
"""

from __future__ import annotations

import argparse
import array
import ctypes
import json
import signal
import sys
import time
from pathlib import Path


from common import filler_prefixes  # noqa: E402  (bench/common.py, beside this file)
from live_frames import FLOOR_SRC, load_xdp, run_ns, udp_frame, veth_xdp_stats  # noqa: E402
from netsentinel.kernel.libbpf import XDP_FLAGS_DRV_MODE, XDP_FLAGS_SKB_MODE  # noqa: E402
from netsentinel.addresses import parse_target  # noqa: E402
from netsentinel.kernel.enforcer import Enforcer  # noqa: E402

EPILOG = """examples (inside a namespace you created):
  ip netns exec nsdut123 .venv/bin/python bench/xdp_holder.py -i vd123 --ban 10.201.7.2 --fill 999999
"""
BATCH = 100_000


def fill(table, prefixes: list[str]) -> None:
    """Batch-insert IPv4 prefixes with zeroed counters."""
    raw = array.array("I")
    for text in prefixes:
        net = parse_target(text)
        raw.append(net.prefixlen)
        raw.append(int.from_bytes(net.network_address.packed, "little"))
    n = len(prefixes)
    if not n:
        return
    keys = (table.Key * n).from_buffer_copy(raw.tobytes())
    values = (table.Leaf * n)()
    ksz, vsz = ctypes.sizeof(table.Key), ctypes.sizeof(table.Leaf)
    for start in range(0, n, BATCH):
        count = min(BATCH, n - start)
        table.items_update_batch((table.Key * count).from_buffer(keys, start * ksz),
                                 (table.Leaf * count).from_buffer(values, start * vsz))


def serve(totals, prog_fd: int) -> None:
    """Answer each line on stdin until EOF: "totals" with the counters,
    "cost DST_MAC SRC_MAC SRC DST" with the program's ns a run on that
    frame (BPF_PROG_TEST_RUN, no flood: the program alone)."""
    for line in sys.stdin:
        words = line.split()
        if words == ["totals"]:
            print(json.dumps(totals()), flush=True)
        elif len(words) == 5 and words[0] == "cost":
            print(json.dumps({"test_run_ns": run_ns(prog_fd, udp_frame(*words[1:]))}), flush=True)


def hold_floor(ifname: str, mode: str) -> int:
    """The floor every XDP filter is compared with: XDP_DROP and nothing else."""
    from bcc import BPF
    _bpf, fn = load_xdp(FLOOR_SRC, "ns_xdp_floor")
    mode = "generic" if mode == "generic" else "native"
    flags = XDP_FLAGS_SKB_MODE if mode == "generic" else XDP_FLAGS_DRV_MODE
    BPF.attach_xdp(ifname, fn, flags)
    try:
        print(json.dumps({"ready": True, "xdp_mode": mode, "entries": 0, "fill_s": 0}), flush=True)
        serve(lambda: {"xdp_drops": veth_xdp_stats(None, ifname).get("xdp_drops", 0)}, fn.fd)
    finally:
        BPF.remove_xdp(ifname, flags)
    return 0


def main() -> int:
    p = argparse.ArgumentParser(prog="bench/xdp_holder.py", description=__doc__.split("\n\n")[0],
                                epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-i", "--interface", required=True)
    p.add_argument("--ban", action="append", default=[], help="IPv4 address/CIDR to ban (repeatable)")
    p.add_argument("--fill", type=int, default=0, help="extra filler /24 prefixes")
    p.add_argument("--xdp-mode", choices=("auto", "native", "generic"), default="auto")
    p.add_argument("--program", choices=("netsentinel", "floor"), default="netsentinel",
                   help="floor: a bare XDP_DROP program instead (no map, no counter: the veth's own "
                        "xdp_drops is its count)")
    args = p.parse_args()

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    if args.program == "floor":
        return hold_floor(args.interface, args.xdp_mode)
    prefixes = filler_prefixes(args.fill) + args.ban
    enf = Enforcer(args.interface, max_bans=max(1, len(prefixes)), cgroup=False,
                   xdp_mode=args.xdp_mode, warn=lambda m: print(f"xdp_holder: {m}", file=sys.stderr))
    try:
        enf.attach()
        t0 = time.monotonic()
        fill(enf.bpf["bans4"], prefixes)
        enf.ban_set_changed()   # as the loader does after each change (the drop path's cache)
        print(json.dumps({"ready": True, "xdp_mode": enf.xdp_mode, "entries": len(prefixes),
                          "fill_s": round(time.monotonic() - t0, 3)}), flush=True)
        serve(enf.totals, enf.bpf.load_func(b"ns_xdp_filter", enf.bcc.BPF.XDP).fd)   # the attached one (cached)
    finally:
        enf.close()   # unpinned: closing the last link fd detaches it
    return 0


if __name__ == "__main__":
    sys.exit(main())
