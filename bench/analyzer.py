#!/usr/bin/env python3
"""bench/analyzer.py - how fast the analyzer judges a replayed event stream,
through the rules alone and with a slow LLM.

Replays N connection events (a deterministic mix: 200 programs, 500
destinations, common and unusual ports, three port scanners) into the real
llm_analyzer.py as fast as a pipe takes them, twice:
  rules  --backend rules
  llm    --backend openai against a loopback stand-in server that takes 1 s
         per answer (netsentinel/testing/llm_standins.py), --llm-scope all, 2 workers,
         60 calls/min, events fed at 2,000/s like a live stream: what a
         slow local model does to the pipeline
and reports events/s, the analyzer's CPU seconds and peak memory, and for
the LLM run the calls made, cache hits, queue depth and drops, and LLM calls
per 10,000 events. Nothing is sent on a network but loopback; the
destination addresses are documentation ranges and are never contacted.

USAGE: .venv/bin/python bench/analyzer.py [--quick] [--events N]
"""

from __future__ import annotations

import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

from common import emit, parser, pyplot, save_figure  # noqa: E402
from netsentinel.records import ANALYZER_STATUS  # noqa: E402
from netsentinel.testing.llm_standins import StandinServer  # noqa: E402

ROOT = HERE.parent
ANALYZER = ROOT / "llm_analyzer.py"
EPILOG = """examples:
  .venv/bin/python bench/analyzer.py --quick          # the CI size
  .venv/bin/python bench/analyzer.py                  # 100,000 events per run
  .venv/bin/python bench/analyzer.py --events 20000 --plot /tmp/analyzer.png
"""


def make_events(n: int, seed: int = 1) -> str:
    """N connection events as JSON lines, the same for a given seed."""
    rng = random.Random(seed)
    dests = [f"198.51.100.{i % 250 + 1}" if i < 250 else f"203.0.113.{i % 250 + 1}" for i in range(500)]
    ports = [443] * 60 + [80] * 20 + [53] * 10 + [22, 23, 445, 3389, 8443, 6667]
    t0 = time.time()
    out = []
    for i in range(n):
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t0 + i / 1000)) + f".{i % 1000:03d}000Z"
        if i % 97 == 0:   # three scanners walking the ports of one host each
            s = i // 97 % 3
            ev = {"pid": 9000 + s, "comm": "scanner", "exe": "/usr/local/bin/scanner",
                  "daddr": dests[s], "dport": 1 + (i // 291) % 1024}
        else:   # each program talks to a handful of its own destinations, as programs do
            p = rng.randrange(200)
            ev = {"pid": 1000 + p, "comm": f"app{p}", "exe": f"/usr/bin/app{p}",
                  "daddr": dests[(p * 7 + rng.randrange(5)) % 500],
                  "dport": ports[(p * 13 + rng.randrange(3)) % len(ports)] if rng.random() < .95
                  else rng.randrange(1024, 65535)}
        out.append(json.dumps({"v": 1, "type": "connection", "ts": ts, "tid": ev["pid"], "ppid": 1,
                               "uid": 1000, "cmdline": ev["exe"], "proc_error": None,
                               "family": "ipv4", "saddr": "192.0.2.2", "sport": None,
                               "mode": "tracepoint", **ev}))
    return "\n".join(out) + "\n"


def feed(proc: subprocess.Popen, events: str, rate: float | None) -> float:
    """Write the events (at `rate` per second, else as fast as the pipe
    takes them), close stdin; returns when the last one was written."""
    lines = events.splitlines(keepends=True)
    t0 = time.monotonic()
    step = 500
    for i in range(0, len(lines), step):
        if rate:
            wait = t0 + i / rate - time.monotonic()
            if wait > 0:
                time.sleep(wait)
        proc.stdin.write("".join(lines[i:i + step]))
    proc.stdin.close()
    return time.monotonic()


def run_case(name: str, events: str, n: int, extra: list[str], env: dict,
             rate: float | None = None) -> dict:
    """One analyzer run over the events; samples its status file meanwhile."""
    with tempfile.TemporaryDirectory(prefix="nsbench-analyzer-") as d:
        rec = Path(d)
        (rec / "filter_config.json").write_text("{}")
        cmd = [sys.executable, str(ANALYZER), "--records", str(rec), "--config",
               str(rec / "filter_config.json"), "--no-history", "--status-interval", "0.5",
               "--drain-timeout", "5", *extra]
        depth = {"max": 0}
        stop = threading.Event()

        def sample():
            while not stop.wait(0.25):
                try:
                    st = json.loads((rec / ANALYZER_STATUS).read_text())
                    depth["max"] = max(depth["max"], st["llm"]["queue_depth"])
                except (OSError, ValueError, KeyError):
                    pass
        threading.Thread(target=sample, daemon=True).start()
        t = time.monotonic()
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
        errs: list[str] = []
        reader = threading.Thread(target=lambda: errs.append(proc.stderr.read()), daemon=True)
        reader.start()
        fed_at = feed(proc, events, rate)
        proc.wait(timeout=1800)
        done = time.monotonic()
        reader.join(10)
        err = "".join(errs)
        seconds = done - t
        stop.set()
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        if proc.returncode != 0:
            raise RuntimeError(f"{name}: analyzer exited {proc.returncode}: {err.strip()[-300:]}")
        st = json.loads((rec / ANALYZER_STATUS).read_text())
    llm = st["llm"]
    judged = st["events_total"]
    return {"case": name, "events": n, "fed_per_s": rate, "judged": judged, "seconds": round(seconds, 2),
            "events_per_s": round(judged / seconds, 1),
            "exit_after_last_event_s": round(done - fed_at, 2), "counts": st["counts"],
            "llm_calls": llm["calls"], "cache_hits": llm["cache_hits"], "coalesced": llm["coalesced"],
            "queue_dropped": llm["queue_dropped"], "rate_limited": llm["rate_limited"],
            "max_queue_depth": depth["max"],
            "llm_calls_per_10k": round(llm["calls"] * 10000 / max(judged, 1), 1),
            "cache_hit_rate": round(llm["cache_hits"] / max(llm["submitted"], 1), 3),
            "_rusage": (usage.ru_utime + usage.ru_stime, usage.ru_maxrss)}


def main() -> int:
    p = parser("analyzer", __doc__.split("\n\n")[1], EPILOG)
    p.add_argument("--events", type=int, help="events per run (default 100,000; quick 2,000)")
    p.add_argument("--llm-rate", type=float, default=2000.0,
                   help="events/s fed in the LLM run, like a live stream (default 2,000)")
    args = p.parse_args()
    n = args.events or (2000 if args.quick else 100_000)
    started = time.time()
    events = make_events(n)
    print(f"[bench analyzer] {n} events, {len(events) / 1e6:.1f} MB of JSON lines", file=sys.stderr)
    env = dict(os.environ, ZHIPUAI_API_KEY="", OLLAMA_HOST="http://127.0.0.1:9", PYTHONUNBUFFERED="1")
    results = []
    cpu_before = 0.0
    print("[bench analyzer] rules only ...", file=sys.stderr, flush=True)
    r = run_case("rules", events, n, ["--backend", "rules"], env)
    cpu_total, rss = r.pop("_rusage")
    r["cpu_s"], r["max_rss_mb"] = round(cpu_total - cpu_before, 2), round(rss / 1024, 1)
    cpu_before = cpu_total
    results.append(r)
    print("[bench analyzer] with a 1 s stand-in LLM ...", file=sys.stderr, flush=True)
    with StandinServer("medium", delay=1.0) as server:
        r = run_case("llm (1 s/call)", events, n,
                     ["--backend", "openai", "--base-url", f"{server.url}/v1", "--model", "standin-model",
                      "--llm-scope", "all", "--workers", "2", "--max-calls-per-minute", "60",
                      "--timeout", "5"], env, rate=args.llm_rate)
    cpu_total, rss = r.pop("_rusage")
    # getrusage(CHILDREN) accumulates: the second run's CPU is the difference;
    # its peak memory is the larger of the two runs' peaks.
    r["cpu_s"], r["max_rss_mb"] = round(cpu_total - cpu_before, 2), round(rss / 1024, 1)
    results.append(r)
    rows = [[x["case"], x["judged"], x["seconds"], x["events_per_s"], x["exit_after_last_event_s"],
             x["cpu_s"], x["max_rss_mb"], x["llm_calls"], x["cache_hit_rate"], x["queue_dropped"],
             x["max_queue_depth"], x["llm_calls_per_10k"]] for x in results]
    emit("analyzer", args.quick, {"events": n, "llm_delay_s": 1.0, "workers": 2,
                                  "max_calls_per_minute": 60, "llm_scope": "all",
                                  "llm_feed_per_s": args.llm_rate, "drain_timeout_s": 5},
         results, started,
         ["case", "judged", "seconds", "events/s", "exit after EOF s", "cpu s", "max RSS MB",
          "LLM calls", "cache hit rate", "queue drops", "max queue", "calls/10k"], rows)
    if args.plot:
        plt = pyplot()
        fig, ax = plt.subplots(figsize=(6, 3.2))
        ax.bar([x["case"] for x in results], [x["events_per_s"] for x in results], color=["#4c72b0", "#dd8452"])
        ax.set_ylabel("events judged per second")
        ax.set_title(f"llm_analyzer.py, {n:,} replayed events")
        save_figure(fig, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
