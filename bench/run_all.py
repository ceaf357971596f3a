#!/usr/bin/env python3
"""bench/run_all.py - run every NetSentinel benchmark, one after the other
(`make bench`), so none of them competes with another for the 2 CPUs.

Each benchmark prints one JSON line on stdout and its table on stderr; this
collects the lines into one file (default docs/bench-results.json, which
docs/benchmarks.md quotes) and, at full size, draws docs/img/bench-*.png.
A benchmark that fails is reported and the others still run; the exit
status is 1 if any failed.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import targets  # noqa: E402  (bench/targets.py, beside this file)
ROOT = HERE.parent
# name in the results file: (script, extra arguments)
BENCHES = {"drop_rate": ("drop_rate", []), "xdp_pair": ("xdp_pair", []), "xdp_variants": ("xdp_variants", []),
           "ban_latency": ("ban_latency", []),
           "ban_latency_dashboard": ("ban_latency", ["--via", "dashboard"]),
           "event_capture": ("event_capture", []), "analyzer": ("analyzer", []),
           "crowdsec_pull": ("crowdsec_pull", []), "stack_cost": ("stack_cost", []),
            "eventstore": ("eventstore", []), "dashboard_render": ("dashboard_render", []),
           # The issue 19 conditions (full size only: --quick sizes its own runs).
           "event_capture_flood": ("event_capture", ["--rates", "0", "--generators", "16",
                                                     "--buffer-pages", "64"]),
           "ban_latency_flood": ("ban_latency", ["--bans", "40", "--flood", "16"]),
           "ban_latency_preload": ("ban_latency", ["--bans", "10", "--preload", "50000", "--burst", "20"])}
FULL_ONLY = {"event_capture_flood", "ban_latency_flood", "ban_latency_preload"}
EPILOG = """examples:
  sudo make bench                                   # full size, writes docs/bench-results.json and plots
  sudo .venv/bin/python bench/run_all.py --quick --out /tmp/quick.json
  sudo .venv/bin/python bench/run_all.py --only ban_latency,event_capture
"""


def old_results(out: str | None, args) -> dict:
    """The results file's earlier runs (--only refreshes some of them)."""
    if not out or not args.only or not Path(out).exists():
        return {}
    try:
        return json.loads(Path(out).read_text())
    except ValueError:
        return {}


def main() -> int:
    p = argparse.ArgumentParser(prog="bench/run_all.py", description=__doc__.split("\n\n")[0],
                                epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="CI size for every benchmark (no plots)")
    p.add_argument("--only", help="comma-separated subset of " + ", ".join(BENCHES))
    p.add_argument("--out", help="combined JSON (default docs/bench-results.json; quick: none)")
    p.add_argument("--no-plots", action="store_true")
    args = p.parse_args()
    names = args.only.split(",") if args.only else list(BENCHES)
    unknown = [n for n in names if n not in BENCHES]
    if unknown:
        p.error(f"unknown benchmark(s): {', '.join(unknown)}")
    out = args.out or (None if args.quick else str(ROOT / "docs" / "bench-results.json"))
    results, failed = {}, []
    for name in names:
        script, extra = BENCHES[name]
        if args.quick and name in FULL_ONLY:
            print(f"== {name}: skipped with --quick (its conditions are the full-size ones)", file=sys.stderr)
            continue
        cmd = [sys.executable, str(HERE / f"{script}.py"), *extra]
        if args.quick:
            cmd.append("--quick")
        elif not args.no_plots:
            cmd += ["--plot", str(ROOT / "docs" / "img" / f"bench-{name.replace('_', '-')}.png")]
        print(f"== {name}: {' '.join(cmd[1:])}", file=sys.stderr, flush=True)
        t = time.monotonic()
        r = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, cwd=ROOT)
        lines = [line for line in r.stdout.splitlines() if line.strip()]
        if r.returncode != 0 or len(lines) != 1:
            failed.append(name)
            print(f"== {name}: FAILED (exit {r.returncode}, {len(lines)} stdout lines)", file=sys.stderr)
            continue
        results[name] = json.loads(lines[0])
        print(f"== {name}: done in {time.monotonic() - t:.0f}s", file=sys.stderr, flush=True)
    if out:
        # --only refreshes those benchmarks and keeps the others' last results.
        old = old_results(out, args)
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps({**old, **results}, indent=1) + "\n")
        print(f"results: {out}", file=sys.stderr)
    # Each issue's target beside its measurement (bench/targets.py).
    print(targets.render(targets.table({**old_results(out, args), **results})), file=sys.stderr)
    print(json.dumps({"bench": "run_all", "ran": list(results), "failed": failed, "out": out}))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
