#!/usr/bin/env python3
"""bench/analyzer_ir.py - the analyzer's reader path in one process, no
threads: bench/analyzer.py's replayed events through Analyzer.run (the
block reader, parsing, the checks, the rules, the records sink's memory
side, the tallies), for counts that do not move with the machine's load.

  --callgrind   runs itself under valgrind twice (SMALL and LARGE events)
                and prints instructions per event: the difference of the two
                runs over the difference of their events, so start-up and
                exit cancel out
  (default)     one run of --events events: CPU seconds and µs per event
                of the run() call alone (load-dependent: for a quick look)
  --profile     the same under cProfile, the top functions by own time
  --baseline DIR  --rounds R runs of this checkout and DIR's (a checkout of
                another commit) interleaved, each its own process: the median
                CPU µs per event of each and their ratio, the load beside

Instruction counts miss what the collector costs in cache misses (it walks
every live container): a change to memory or the collector shows in CPU
time, so compare those side by side (--baseline).

The sink's writer side (flushes, the event store's process) does not run:
this is the reader's share of the analyzer's CPU. What the flusher thread
would take is taken every DRAIN_EVERY events (its 0.25 s at 20,000/s), so
the memory the collector walks is what a running analyzer holds. --store
makes the sink queue every verdict for the event store as the default
configuration does.

USAGE: .venv/bin/python bench/analyzer_ir.py [--callgrind] [--events N] [--store] [--profile]
       .venv/bin/python bench/analyzer_ir.py --baseline DIR [--rounds 5] [--events N] [--store]
"""

from __future__ import annotations

import argparse
import io
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

SMALL, LARGE = 1000, 9000
DRAIN_EVERY = 5000


def build(records: Path, store: bool):
    from netsentinel.analyzer.cli import _base_config, build_parser
    from netsentinel.analyzer.pipeline import Analyzer
    try:
        from netsentinel.analyzer.reader import quiet_collector
    except ImportError:   # a checkout from before it (--baseline): the collector as it was
        quiet_collector = None
    from netsentinel.analyzer.rules import RuleEngine
    from netsentinel.analyzer.settings import SettingsWatcher
    from netsentinel.store import RecordsStore
    from netsentinel.records import EVENTS_DB
    from netsentinel.whitelist import WhitelistFile

    (records / "filter_config.json").write_text("{}")
    args = build_parser().parse_args(["--backend", "rules"])
    rs = RecordsStore(records)
    settings = SettingsWatcher(rs, _base_config(args), print)
    a = Analyzer(rs, settings, RuleEngine(), WhitelistFile(str(records / "filter_config.json")),
                 warn=lambda m: None, history=False)
    if store:
        # What the sink does per verdict with the event store on: hand the
        # entry to the writer's queue (a StoreProcess not started: the
        # writer, its own process, is not this path's work).
        from netsentinel.analyzer import sinks
        if hasattr(sinks, "EVENTS_BUFFER"):   # a checkout from before: the sink's own buffer
            a.sink.events = True
        else:
            from netsentinel.eventstore.process import StoreProcess
            a.sink.events = StoreProcess(str(records / EVENTS_DB), print)
    a._track_settings(settings.current(), wait=True)
    # A checkout from before blocks judged each line alone.
    name = "handle_block" if hasattr(a, "handle_block") else "handle_line"
    handle, seen = getattr(a, name), [0]

    def block(lines):
        handle(lines)
        seen[0] += len(lines) if name == "handle_block" else 1
        if seen[0] >= DRAIN_EVERY:   # what the flusher takes (and writes)
            seen[0] = 0
            with a.sink._lock:
                if hasattr(a.sink, "_events_buf"):
                    a.sink._events_buf.clear()
                elif store:   # what the sending thread takes
                    with a.sink.events._lock:
                        a.sink.events._out.clear()
                a.sink._threats = {}
                a.sink._history_buf = []
    setattr(a, name, block)
    if quiet_collector is not None:
        quiet_collector()   # as the analyzer's main does before reading
    return a


def run(n: int, store: bool, path: Path | None = None) -> tuple[float, dict]:
    if path is not None:   # made beforehand: its making is not counted
        data = path.read_bytes()
    else:
        from analyzer import make_events
        data = make_events(n).encode()
    with tempfile.TemporaryDirectory(prefix="nsbench-ir-") as d:
        a = build(Path(d), store)
        t = time.process_time()
        a.run(io.BytesIO(data))
        cpu = time.process_time() - t
        return cpu, dict(a.counts)


def callgrind(n: int, store: bool) -> int:
    """Instructions of a whole run of n events (valgrind's summary line),
    the events made beforehand (making them is not the analyzer's work)."""
    from analyzer import make_events
    with tempfile.NamedTemporaryFile(prefix="nsbench-ir-", suffix=".jsonl") as f:
        f.write(make_events(n).encode())
        f.flush()
        cmd = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable,
               __file__, "--events", str(n), "--input", f.name, *(["--store"] if store else [])]
        # A fixed hash seed: dict and set layouts (and so counts) the same each run.
        out = subprocess.run(cmd, capture_output=True, text=True, check=True,
                             env=dict(os.environ, PYTHONHASHSEED="0"))
    m = re.search(r"Collected : (\d+)", out.stderr)
    if not m:
        raise SystemExit(f"no instruction count in valgrind's output: {out.stderr[-300:]}")
    return int(m.group(1))


def side_by_side(baseline: Path, rounds: int, n: int, store: bool) -> None:
    """Interleaved runs of this checkout's reader path and baseline's."""
    codes = {"this": str(HERE.parent), "baseline": str(baseline)}
    got: dict[str, list] = {k: [] for k in codes}
    for r in range(rounds):
        for name, root in codes.items():
            out = subprocess.run([sys.executable, __file__, "--events", str(n),
                                  *(["--store"] if store else [])], capture_output=True, text=True,
                                 env=dict(os.environ, PYTHONPATH=root), check=True).stdout
            us = float(re.search(r"([0-9.]+) µs/event", out).group(1))
            got[name].append(us)
            print(f"round {r + 1} {name}: {us:.1f} µs/event (load {os.getloadavg()[0]:.2f})", flush=True)
    med = {k: statistics.median(v) for k, v in got.items()}
    print(f"median µs/event: this {med['this']:.1f}, baseline {med['baseline']:.1f}; "
          f"this / baseline {med['this'] / med['baseline']:.3f}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--events", type=int, default=100_000)
    p.add_argument("--store", action="store_true", help="queue verdicts for the event store too")
    p.add_argument("--input", type=Path, help="read the events from this file (made beforehand)")
    p.add_argument("--callgrind", action="store_true", help="instructions per event (valgrind)")
    p.add_argument("--profile", action="store_true", help="cProfile's top functions")
    p.add_argument("--baseline", type=Path, metavar="DIR", help="compare with this checkout")
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args()
    if args.baseline:
        side_by_side(args.baseline, args.rounds, args.events, args.store)
        return 0
    if args.callgrind:
        small, large = callgrind(SMALL, args.store), callgrind(LARGE, args.store)
        print(f"instructions per event: {(large - small) / (LARGE - SMALL):,.0f} "
              f"({SMALL}: {small:,}, {LARGE}: {large:,}; store queue {'on' if args.store else 'off'})")
        return 0
    if args.profile:
        import cProfile
        import pstats
        prof = cProfile.Profile()
        prof.enable()
        cpu, counts = run(args.events, args.store, args.input)
        prof.disable()
        pstats.Stats(prof).sort_stats("tottime").print_stats(30)
        return 0
    cpu, counts = run(args.events, args.store, args.input)
    print(f"{args.events} events: {cpu:.2f} s CPU, {cpu / args.events * 1e6:.1f} µs/event "
          f"(load {os.getloadavg()[0]:.2f}); verdicts {counts}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
