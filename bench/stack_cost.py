#!/usr/bin/env python3
"""bench/stack_cost.py - what does --stack cost per packet?

One veth pair between two throwaway namespaces; trafgen in the peer floods
60-byte UDP frames to a closed port of the device under test, so every frame
is dropped by the stack (reason NO_SOCKET) and runs the stack program on
skb:kfree_skb: the worst case for --stack, where each packet is a drop. The
loader (unified_ebpf.py, XDP attached, nothing banned) runs with --no-stack,
with --stack (the default: the per-flow path off) and with --stack
--stack-path (what the path adds), in turn, rotating the order, several
rounds in the same run.

Measured per packet (frames the interface handed to the stack): the
receiving CPU's softirq time (where tracepoint programs run; a veth has no
IRQ, so trafgen is pinned to --cpu and that CPU's softirq is the receive
path), and the loader process's own CPU (reading the maps every interval).
See docs/STACK.md.
"""

from __future__ import annotations

import time

from common import (LoaderProc, Progress, Cleanup, emit, lab_session, need_root, parser,
                    process_cpu_seconds, scratch_dir, stop_process, tool_version)
from drop_rate import flood_defaults, flood_options, measure, median, rx_packets

NAME = "stack_cost"
EPILOG = """examples:
  sudo .venv/bin/python bench/stack_cost.py --quick     # CI size: one short round
  sudo .venv/bin/python bench/stack_cost.py --rounds 5

output: one JSON line on stdout ({"bench": "stack_cost", "results": [...]}), a table on stderr.
"""
MODES = {"off": ["--no-stack"], "on": ["--stack", "--no-stack-path", "--stack-interval", "0.5"],
         "path": ["--stack", "--stack-path", "--stack-interval", "0.5"]}


def one(lab, mode: str, args, cfg, records, cleanup, progress) -> dict:
    lp = LoaderProc(lab, records, records / "filter_config.json", *MODES[mode], echo=False)
    cleanup.push(stop_process, lp.proc, 15)
    try:
        lp.wait_started()
        rx0, cpu0 = rx_packets(lab), process_cpu_seconds(lp.proc.pid)
        m = measure(lab, lambda: rx_packets(lab), args, cfg, cleanup)
        rx1, cpu1 = rx_packets(lab), process_cpu_seconds(lp.proc.pid)
        drops_events = sum(1 for e in lp.all_events if e["type"] == "drops")
    finally:
        lp.stop()
    packets = rx1 - rx0
    row = {"mode": mode, "packets": packets, "pps": m["drops_per_s"],
           "softirq_ns_per_packet": m["softirq_ns_per_drop"], "cpu_ns_per_packet": m["cpu_ns_per_drop"],
           "loader_ns_per_packet": round((cpu1 - cpu0) * 1e9 / packets, 2) if packets else None,
           "loader_cpu_s": round(cpu1 - cpu0, 3), "drops_events": drops_events}
    progress(f"{mode}: {row['pps']:,} pkt/s, softirq {row['softirq_ns_per_packet']} ns/pkt, "
             f"loader {row['loader_ns_per_packet']} ns/pkt")
    return row


def summary(rows: list[dict]) -> dict:
    out = {}
    for mode in MODES:
        rs = [r for r in rows if r["mode"] == mode]
        out[mode] = {k: round(median([r[k] for r in rs if r[k] is not None]), 2)
                     for k in ("pps", "softirq_ns_per_packet", "cpu_ns_per_packet", "loader_ns_per_packet")}
    on, off = out["on"], out["off"]
    out["added_ns_per_packet"] = round(on["cpu_ns_per_packet"] + on["loader_ns_per_packet"]
                                       - off["cpu_ns_per_packet"] - off["loader_ns_per_packet"], 1)
    # CPU per 100k packets/s: (ns per packet x 1e5 packets) per second, as a share of one CPU.
    out["added_cpu_pct_at_100k_pps"] = round(out["added_ns_per_packet"] * 1e5 / 1e9 * 100, 2)
    # What the per-flow path (--stack-path, off by default) adds on top of --stack.
    pa = out["path"]
    out["path_added_ns_per_packet"] = round(pa["cpu_ns_per_packet"] + pa["loader_ns_per_packet"]
                                            - on["cpu_ns_per_packet"] - on["loader_ns_per_packet"], 1)
    return out


def main() -> int:
    p = parser(NAME, __doc__, EPILOG)
    p.add_argument("--rounds", type=int, help="rounds of the three modes, rotating (default 3; quick 1)")
    flood_options(p, "windows per loader run")
    args = p.parse_args()
    need_root(NAME)
    args.rounds = args.rounds or (1 if args.quick else 3)
    flood_defaults(args)

    started, progress, cleanup = time.time(), Progress(NAME), Cleanup()
    rows: list[dict] = []
    try:
        with lab_session(cleanup, progress) as lab:
            scratch = scratch_dir(cleanup)
            cfg = scratch / "flood.cfg"
            for r in range(args.rounds):
                # Alternate which goes first, so drift over the run hits both alike.
                order = list(MODES)
                for mode in order[r % len(order):] + order[:r % len(order)]:
                    records = scratch / f"records-{r}-{mode}"
                    records.mkdir()
                    (records / "filter_config.json").write_text("{}")
                    rows.append({"round": r, **one(lab, mode, args, cfg, records, cleanup, progress)})
    finally:
        cleanup.run()
    s = summary(rows)
    table = [[r["round"], r["mode"], r["pps"], r["softirq_ns_per_packet"], r["cpu_ns_per_packet"],
              r["loader_ns_per_packet"], r["drops_events"]] for r in rows]
    emit(NAME, args.quick, {"rounds": args.rounds, "window_s": args.window, "repeat": args.repeat,
                            "warmup_s": args.warmup, "cpu": args.cpu, "frame_bytes": 60,
                            "tools": {"trafgen": tool_version("trafgen", "-v")}},
         rows, started, ["round", "stack", "pkt/s", "softirq ns/pkt", "cpu ns/pkt", "loader ns/pkt",
                         "drops events"], table, summary=s)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
