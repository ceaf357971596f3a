#!/usr/bin/env python3
"""bench/xdp_variants.py - where NetSentinel's XDP drop path spends its
nanoseconds: variants of bpf/enforce.bpf.c, each with one piece of the
per-drop work taken out, timed side by side on the flood's frame from a
banned source, against the bare XDP_DROP floor.

Each variant is the program's source with a few exact text edits (below;
an edit whose text is no longer in the source stops the bench, so the
variants cannot silently drift from the program they dissect). Nothing is
attached: each variant is compiled by BCC, its bans4 trie filled with the
banned /32 plus N-1 filler /24s, and run with BPF_PROG_TEST_RUN (no live
frames: the kernel runs it `--repeat` times on the frame and reports the
mean ns a run). Rounds are interleaved over the variants, medians reported,
so a loaded machine moves every variant alike. `--against REV` adds the
program as of a git revision (e.g. the one before the drop path's cache;
this file as of commit a556544 dissects that program: its LPM lookup, a /32
hash before it, its ban-value counters).
"""

from __future__ import annotations

import os
import subprocess
import time

from common import ROOT, emit, filler_prefixes, need_root, parser
from flood import median
from live_frames import FLOOR_SRC, READ_FLOOR_SRC, load_xdp, test_run, udp_frame
from xdp_holder import fill

NAME = "xdp_variants"
EPILOG = """examples:
  sudo nice -n 10 .venv/bin/python bench/xdp_variants.py --sizes 1,100000
  sudo .venv/bin/python bench/xdp_variants.py --quick

output: one JSON line on stdout, a table on stderr (ns a run; delta to `current` and to the floor).
"""
WHAT = {"floor": "a bare XDP_DROP program",
        "read-floor": "reads the IPv4 source address, then XDP_DROP (the floor of a filter that looks)"}
BANNED, DST = "192.0.2.2", "192.0.2.1"   # TEST-NET-1: the frame is never sent anywhere

# name -> (what it takes out, [(old, new), ...] applied to bpf/enforce.bpf.c). The frame's
# source is banned, so after the first run every run is a hit in the drop path's cache.
DROPS = ("    ns_count(NS_CNT_XDP_DROPS);\n    return XDP_DROP;", "    return XDP_DROP;")
STAMP = ("    if (tick != *last_tick || !*last_ns) {", "    if (0) {")
COUNT = ("    *drops += 1;\n", "")
VLAN = ("    for (int i = 0; i < 2; i++) {\n        if (proto != htons(ETH_P_8021Q)",
        "    for (int i = 0; i < 0; i++) {\n        if (proto != htons(ETH_P_8021Q)")
VARIANTS: dict[str, tuple[str, list[tuple[str, str]]]] = {
    "current": ("the program as it is", []),
    "cache-off": ("the cache off (ban_gen 0): the LPM trie for every packet", []),
    "no-drops-total": ("without the NS_CNT_XDP_DROPS count", [DROPS]),
    "no-vlan": ("without the VLAN walk", [VLAN]),
    "no-drop-stamp": ("without the last-drop time (jiffies, compare)", [STAMP]),
    "no-source-count": ("without the slot's (or ban's) drop count", [COUNT]),
    "no-counters": ("no counter of any kind", [DROPS, STAMP, COUNT]),
}
CACHE_OFF = {"cache-off"}


def variant_source(src: str, edits: list[tuple[str, str]], name: str) -> str:
    for old, new in edits:
        if src.count(old) != 1:
            raise SystemExit(f"bench/xdp_variants.py: variant {name}: the text to edit is "
                             f"{'gone from' if old not in src else 'not unique in'} enforce.bpf.c; "
                             f"update VARIANTS: {old.strip()[:60]!r}")
        src = src.replace(old, new)
    return src


def load_variants(names: list[str], prefixes: list[str], extra_src: dict[str, str]):
    """{name: (bpf object, prog fd)} for every variant, bans4 filled."""
    from netsentinel.abi import cflags
    from netsentinel.kernel.host import program_source
    base = program_source("enforce.bpf.c")
    flags = cflags(max_bans=max(1, len(prefixes)))
    out = {}
    for name in [*names, *extra_src]:
        src = extra_src.get(name) or variant_source(base, VARIANTS[name][1], name)
        b, fn = load_xdp(src, "ns_xdp_filter", flags)
        fill(b["bans4"], prefixes)
        if "ban_gen" in src and name not in CACHE_OFF:   # the cache on, as Enforcer.load() turns it on
            t = b["ban_gen"]
            g = t.Leaf()
            g.gen, g.mult = 1, 0x9E3779B1
            t[t.Key(0)] = g
        out[name] = (b, fn.fd)
    b, fn = load_xdp(READ_FLOOR_SRC, "ns_xdp_read_floor")
    out["read-floor"] = (b, fn.fd)
    b, fn = load_xdp(FLOOR_SRC, "ns_xdp_floor")
    out["floor"] = (b, fn.fd)
    return out


def measure(progs: dict, frame: bytes, rounds: int, repeat: int) -> dict[str, list[int]]:
    runs: dict[str, list[int]] = {n: [] for n in progs}
    for _ in range(rounds):
        for name, (_b, fd) in progs.items():
            runs[name].append(test_run(fd, frame, repeat, live=False))
    return runs


def program_options(p, default_variants: str) -> None:
    """--sizes, --variants, --against (also bench/xdp_pair.py's)."""
    p.add_argument("--sizes", default=None, help="comma-separated ban-set sizes (default 1,100000; quick: 1)")
    p.add_argument("--variants", default=default_variants,
                   help=f"comma-separated subset of {', '.join(VARIANTS)} (default {default_variants})")
    p.add_argument("--against", action="append", default=[], metavar="REV",
                   help="also bpf/enforce.bpf.c as of git revision REV (row `at REV`; repeatable)")


def programs_chosen(p, args) -> tuple[list[int], list[str], dict[str, str]]:
    """(sizes, variant names, {"at REV": source}) from program_options()."""
    sizes = [int(s) for s in (args.sizes or ("1" if args.quick else "1,100000")).split(",")]
    names = [n for n in args.variants.split(",") if n]
    bad = [n for n in names if n not in VARIANTS]
    if bad:
        p.error(f"unknown variant(s): {', '.join(bad)}")
    against = {f"at {rev}": subprocess.run(["git", "show", f"{rev}:bpf/enforce.bpf.c"], cwd=ROOT, check=True,
                                           capture_output=True, text=True).stdout for rev in args.against}
    return sizes, names, against


def main() -> int:
    p = parser(NAME, __doc__, EPILOG)
    program_options(p, ",".join(VARIANTS))
    p.add_argument("--rounds", type=int, help="interleaved rounds (default 15; quick 3)")
    p.add_argument("--repeat", type=int, help="runs per test run (default 2,000,000; quick 100,000)")
    args = p.parse_args()
    need_root(NAME)
    sizes, names, against = programs_chosen(p, args)
    rounds = args.rounds or (3 if args.quick else 15)
    repeat = args.repeat or (100_000 if args.quick else 2_000_000)
    frame = udp_frame("02:00:00:00:00:01", "02:00:00:00:00:02", BANNED, DST)
    started, rows = time.time(), []
    for n in sizes:
        progs = load_variants(names, filler_prefixes(n - 1) + [f"{BANNED}/32"], against)
        load0 = os.getloadavg()[0]
        runs = measure(progs, frame, rounds, repeat)
        load1 = os.getloadavg()[0]
        med = {k: median(v) for k, v in runs.items()}
        for name, v in runs.items():
            rows.append({"prefixes": n, "variant": name, "what": VARIANTS.get(name, (WHAT.get(name, name),))[0],
                         "ns": med[name], "ns_rounds": v,
                         "minus_current": round(med[name] - med.get("current", med[name]), 1),
                         "minus_floor": round(med[name] - med["floor"], 1),
                         "loadavg_1m": [round(load0, 2), round(load1, 2)]})
        del progs   # the BPF objects close their programs and maps when dropped
    emit(NAME, args.quick, {"sizes": sizes, "variants": names, "rounds": rounds, "repeat": repeat},
         rows, started, ["prefixes", "variant", "ns a run", "- current", "- floor", "load"],
         [[r["prefixes"], r["variant"], r["ns"], r["minus_current"], r["minus_floor"], r["loadavg_1m"][0]]
          for r in rows])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
