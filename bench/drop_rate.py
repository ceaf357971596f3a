#!/usr/bin/env python3
"""bench/drop_rate.py - how fast does each filter drop a flood from a banned source?

One veth pair between two throwaway namespaces; the peer floods 60-byte UDP
frames from a banned source; the device under test drops them with, in turn:
a bare XDP_DROP program (the floor), NetSentinel's XDP filter, xdp-filter
(xdp-tools), NetSentinel's XDP in generic mode, nftables (netdev ingress
hook, then ip input hook), iptables raw PREROUTING (one -s rule per prefix,
then one rule over an ipset hash:net). Then again with the ban set filled to
10, 1,000, 100,000 and 1,000,000 prefixes (distinct /24s plus the banned /32).

The flood (--source): `live` (default) sends xdp_frames that build no skb
(BPF_PROG_TEST_RUN with XDP live frames, bench/live_frames.py), so XDP's
advantage shows; `trafgen` (netsniff-ng) sends skbs, which a veth hands to
XDP already built, so every filter looks alike. Where live frames are
refused (Linux < 5.18) the bench says why and uses trafgen.

Measured over a fixed window after a warm-up: packets dropped per second
(each filter's own counter) and the time the receiving CPU spent in softirq
(/proc/stat). A veth has no IRQ: the receive path runs in softirq on the CPU
that transmitted, so trafgen is pinned to one CPU (--cpu) and that CPU's
softirq time is the receiver's cost. Ratios are to the floor (and to
NetSentinel's XDP) at the same size.

XDP is held by bench/xdp_holder.py (the loader's Enforcer, map filled by
batch update); see docs/benchmarks.md.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from common import (ROOT, VENV_PY, Cleanup, Progress, emit, filler_prefixes, lab_session, need_root,
                    parser, pyplot, save_figure, scratch_dir, sh, stop_process, style_axes, tool_version)
from flood import choose_source, flood_defaults, flood_options, in_ns, mac_of, measure
from flood import median  # noqa: F401  (bench/stack_cost.py imports it from here)
from xdp_refs import Skip, setup_xdp_filter

NAME = "drop_rate"
EPILOG = """examples:
  sudo .venv/bin/python bench/drop_rate.py --quick          # CI size: 1 and 10 prefixes, short windows
  sudo .venv/bin/python bench/drop_rate.py                  # 1 .. 1,000,000 prefixes
  sudo .venv/bin/python bench/drop_rate.py --sizes 1,1000 --window 10 --methods xdp-floor,xdp,nft-ingress
  sudo .venv/bin/python bench/drop_rate.py --source trafgen # skbs (what the docs measured before)

output: one JSON line on stdout ({"bench": "drop_rate", "results": [...]}), a table on stderr.
"""
METHODS = ("xdp-floor", "xdp", "xdp-filter", "xdp-generic", "nft-ingress", "nft-input", "iptables-raw",
           "iptables-raw-ipset")
FULL_SIZES = (1, 10, 1000, 100_000, 1_000_000)
QUICK_SIZES = (1, 10)
TABLE = "nsbench"   # nft table / ipset name, inside the lab namespace only


# ---------------------------------------------------------------- filters
# Each setup returns (read_counter, teardown); read_counter() -> packets dropped so far.

def setup_xdp(lab, banned: str, fillers: list[str], mode: str, cleanup: Cleanup, program="netsentinel"):
    proc = subprocess.Popen(
        ["ip", "netns", "exec", lab.dut, VENV_PY, str(ROOT / "bench" / "xdp_holder.py"),
         "-i", lab.dut_if, "--ban", banned, "--fill", str(len(fillers)), "--xdp-mode", mode,
         "--program", program],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT)
    cleanup.push(stop_process, proc)
    line = proc.stdout.readline()
    if not line:
        raise RuntimeError(f"xdp_holder exited ({proc.wait()}) before attaching")
    ready = json.loads(line)
    if mode != "auto" and ready["xdp_mode"] != mode:
        stop_process(proc, signal.SIGTERM)
        raise Skip(f"asked for {mode} XDP, got {ready['xdp_mode']}")

    def ask(line: str) -> dict:
        proc.stdin.write(line + "\n")
        proc.stdin.flush()
        return json.loads(proc.stdout.readline())

    def teardown():
        proc.stdin.close()
        proc.wait(timeout=30)
    # The program alone on the flood's frame, before the flood (no noise from it).
    cost = ask(f"cost {mac_of(lab.dut, lab.dut_if)} {mac_of(lab.peer, lab.peer_if)} {lab.peer4} {lab.dut4}")
    return (lambda: ask("totals")["xdp_drops"]), teardown, {"xdp_mode": ready["xdp_mode"], **cost}


def nft_script(family: str, hook: str, lab, banned: str, fillers: list[str]) -> str:
    dev = f' device "{lab.dut_if}"' if hook == "ingress" else ""
    lines = [f"table {family} {TABLE} {{",
             "  set banned { type ipv4_addr; flags interval; }",
             "  counter drops { }",
             f"  chain c {{ type filter hook {hook}{dev} priority -300; policy accept;",
             '    ip saddr @banned counter name "drops" drop',
             "  }",
             "}"]
    for i in range(0, len(fillers), 20000):
        lines.append(f"add element {family} {TABLE} banned {{ {', '.join(fillers[i:i + 20000])} }}")
    lines.append(f"add element {family} {TABLE} banned {{ {banned} }}")
    return "\n".join(lines) + "\n"


def setup_nft(lab, banned, fillers, family: str, hook: str, timeout: float):
    with tempfile.NamedTemporaryFile("w", suffix=".nft", delete=False) as f:
        f.write(nft_script(family, hook, lab, banned, fillers))
    try:
        in_ns(lab, "nft", "-f", f.name, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise Skip(f"loading {len(fillers) + 1} prefixes into an nft interval set took over {timeout:.0f}s")
    finally:
        Path(f.name).unlink()

    def read() -> int:
        out = json.loads(in_ns(lab, "nft", "-j", "list", "counter", family, TABLE, "drops"))
        return next(o["counter"]["packets"] for o in out["nftables"] if "counter" in o)

    def teardown():
        in_ns(lab, "nft", "delete", "table", family, TABLE)
    return read, teardown, {}


def iptables_read(lab) -> int:
    out = in_ns(lab, "iptables", "-t", "raw", "-L", "PREROUTING", "-v", "-x", "-n")
    return sum(int(line.split()[0]) for line in out.splitlines()[2:] if line.strip())


def setup_iptables(lab, banned, fillers, linear_max: int, timeout: float):
    if len(fillers) + 1 > linear_max:
        raise Skip(f"{len(fillers) + 1} linear rules is over --linear-max {linear_max} "
                   "(see iptables-raw-ipset)")
    # The banned source's rule is last: a linear chain is scanned to the match.
    rules = [f"-A PREROUTING -s {p} -j DROP" for p in fillers + [banned]]
    in_ns(lab, "iptables-restore", stdin="*raw\n" + "\n".join(rules) + "\nCOMMIT\n", timeout=timeout)

    def teardown():
        in_ns(lab, "iptables", "-t", "raw", "-F", "PREROUTING")
    return (lambda: iptables_read(lab)), teardown, {}


def setup_ipset(lab, banned, fillers, timeout: float):
    n = len(fillers) + 1
    lines = [f"create {TABLE} hash:net family inet hashsize {max(1024, n // 4)} maxelem {max(65536, 2 * n)}"]
    lines += [f"add {TABLE} {p}" for p in fillers + [banned]]
    in_ns(lab, "ipset", "restore", stdin="\n".join(lines) + "\n", timeout=timeout)
    in_ns(lab, "iptables", "-t", "raw", "-A", "PREROUTING", "-m", "set", "--match-set", TABLE, "src",
          "-j", "DROP")

    def teardown():
        in_ns(lab, "iptables", "-t", "raw", "-F", "PREROUTING")
        in_ns(lab, "ipset", "destroy", TABLE)
    return (lambda: iptables_read(lab)), teardown, {}


def rx_packets(lab) -> int:
    """Frames the lab interface handed to the stack. With every frame of the
    flood from the banned source, this is what a netfilter filter dropped;
    cheap to read, unlike `nft list`, which fetches a million-element set."""
    out = json.loads(sh("ip", "-n", lab.dut, "-j", "-s", "link", "show", "dev", lab.dut_if).stdout)
    return out[0]["stats64"]["rx"]["packets"]


def setup(method: str, lab, banned, fillers, args, cleanup):
    t = args.setup_timeout
    if method == "xdp-floor":
        return setup_xdp(lab, banned, [], "native", cleanup, "floor")
    if method == "xdp":
        return setup_xdp(lab, banned, fillers, "native", cleanup)
    if method == "xdp-filter":
        return setup_xdp_filter(lab, banned, fillers, cleanup)
    if method == "xdp-generic":
        return setup_xdp(lab, banned, fillers, "generic", cleanup)
    if method == "nft-ingress":
        return setup_nft(lab, banned, fillers, "netdev", "ingress", t)
    if method == "nft-input":
        return setup_nft(lab, banned, fillers, "ip", "input", t)
    if method == "iptables-raw":
        return setup_iptables(lab, banned, fillers, args.linear_max, t)
    return setup_ipset(lab, banned, fillers, t)


def add_ratios(rows: list[dict]) -> None:
    """drops/s and softirq ns per drop as ratios to the floor and to NetSentinel's XDP, same size."""
    for ref, name in (("xdp-floor", "floor"), ("xdp", "xdp")):
        by_size = {r["prefixes"]: r for r in rows if r["method"] == ref and r.get("drops_per_s")}
        for r in rows:
            x = by_size.get(r["prefixes"])
            if x and r.get("drops_per_s") is not None:
                r[f"drops_ratio_to_{name}"] = round(r["drops_per_s"] / x["drops_per_s"], 3)
                if r.get("softirq_ns_per_drop") and x.get("softirq_ns_per_drop"):
                    r[f"cost_ratio_to_{name}"] = round(r["softirq_ns_per_drop"] / x["softirq_ns_per_drop"], 3)
                if r.get("test_run_ns") and x.get("test_run_ns"):
                    r[f"test_run_ratio_to_{name}"] = round(r["test_run_ns"] / x["test_run_ns"], 3)


def plot(rows: list[dict], path: str) -> None:
    plt = pyplot()
    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 4.5))
    for m in METHODS:
        pts = [(r["prefixes"], r) for r in rows if r["method"] == m and r.get("drops_per_s")]
        if not pts:
            continue
        xs = [p for p, _ in pts]
        a.plot(xs, [r["drops_per_s"] / 1000 for _, r in pts], marker="o", label=m)
        b.plot(xs, [r["softirq_ns_per_drop"] or 0 for _, r in pts], marker="o", label=m)
    style_axes(a, "banned prefixes", "thousand packets/s dropped", "drop rate (one CPU, sender and receiver)")
    style_axes(b, "banned prefixes", "softirq ns per dropped packet", "receiver cost")
    b.set_yscale("log")
    save_figure(fig, path)


def one_filter(lab, m: str, n: int, fillers: list[str], args, cfg, cleanup: Cleanup,
               progress: Progress) -> dict:
    """One filter method with n banned prefixes: loaded, flooded, measured, torn down."""
    row = {"prefixes": n, "method": m}
    progress(f"{n:>9,} prefixes  {m}: loading")
    t = time.monotonic()
    try:
        read, teardown, info = setup(m, lab, f"{lab.peer4}/32", fillers, args, cleanup)
    except Skip as e:
        row["skipped"] = str(e)
        progress(f"{n:>9,} prefixes  {m}: skipped: {e}")
        return row
    row["setup_s"] = round(time.monotonic() - t, 2)
    own = info.pop("own", read)
    row.update(info)
    # Reading nft's own counter means listing the set: skipped when huge.
    own_ok = m.startswith(("xdp", "iptables")) or n <= 100_000
    try:
        before = own() if own_ok else None
        load0 = os.getloadavg()[0]
        row.update(measure(lab, read if m.startswith("xdp") else (lambda: rx_packets(lab)),
                           args, cfg, cleanup))
        row["loadavg_1m"] = [round(load0, 2), round(os.getloadavg()[0], 2)]
        if own_ok:
            # The filter's own count over the whole flood: it dropped them all.
            row["filter_counted"] = own() - before
    finally:
        teardown()
    progress(f"{n:>9,} prefixes  {m}: {row['drops_per_s']:,} drops/s, "
             f"softirq {row['rx_cpu']['softirq']}% of CPU {args.cpu}")
    return row


def main() -> int:
    p = parser(NAME, __doc__, EPILOG)
    p.add_argument("--sizes", help="comma-separated ban-set sizes (default 1,10,1000,100000,1000000; "
                   "quick: 1,10)")
    p.add_argument("--methods", default=",".join(METHODS), help="comma-separated subset of " + ", ".join(METHODS))
    p.add_argument("--source", choices=("live", "trafgen"), default="live",
                   help="live: XDP live frames, no skb (default; trafgen where the kernel refuses); "
                        "trafgen: skbs")
    flood_options(p, "measured windows per filter and size; medians are reported")
    p.add_argument("--linear-max", type=int, default=10_000,
                   help="largest size tried as one iptables rule per prefix (default %(default)s)")
    p.add_argument("--setup-timeout", type=float, default=300,
                   help="give up loading a rule set after this many seconds (default %(default)s)")
    args = p.parse_args()
    need_root(NAME)
    sizes = [int(s) for s in args.sizes.split(",")] if args.sizes else list(QUICK_SIZES if args.quick else FULL_SIZES)
    methods = [m for m in args.methods.split(",") if m]
    bad = [m for m in methods if m not in METHODS]
    if bad:
        p.error(f"unknown method(s): {', '.join(bad)}")
    flood_defaults(args)

    started, progress, cleanup = time.time(), Progress(NAME), Cleanup()
    rows: list[dict] = []
    try:
        with lab_session(cleanup, progress) as lab:
            cfg = scratch_dir(cleanup) / "flood.cfg"
            source_note = choose_source(lab, args, cleanup, progress)
            for n in sizes:
                fillers = filler_prefixes(n - 1)
                rows += [one_filter(lab, m, n, fillers, args, cfg, cleanup, progress) for m in methods]
        add_ratios(rows)
    finally:
        cleanup.run()
    if args.plot:
        plot(rows, args.plot)
    table = [[r["prefixes"], r["method"], r.get("drops_ratio_to_floor"), r.get("drops_per_s"),
              r.get("drops_ratio_to_xdp"), r.get("rx_cpu", {}).get("softirq"), r.get("softirq_ns_per_drop"),
              r.get("cost_ratio_to_floor"), r.get("test_run_ns"), (r.get("loadavg_1m") or [None])[0], r.get("setup_s"),
              r.get("skipped", "")[:40]] for r in rows]
    emit(NAME, args.quick, {"sizes": sizes, "methods": methods, "source": args.source,
                            "source_note": source_note, "window_s": args.window,
                            "repeat": args.repeat,
                            "warmup_s": args.warmup, "cpu": args.cpu, "frame_bytes": 60,
                            "linear_max": args.linear_max,
                            "tools": {"trafgen": tool_version("trafgen", "-v"),
                                      "nft": tool_version("nft", "--version"),
                                      "iptables": tool_version("iptables", "--version"),
                                      "ipset": tool_version("ipset", "--version"),
                                      "xdp-tools": tool_version("dpkg-query", "-W", "-f=${Version}", "xdp-tools")}},
         rows, started,
         ["prefixes", "method", "x floor", "drops/s", "x XDP", "softirq %", "ns/pkt", "cost x floor",
          "run ns", "load", "setup s", "note"],
         table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
