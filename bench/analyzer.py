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
per 10,000 events. The rules run is made with the event store (the
default) and with --no-store, side by side (their ratio: what the store
costs the analyzer), each with records/ empty and full (100,000 threats of
distinct actors through threats.add_or_merge_many, which keeps at most
MAX_OPEN of them open and counts the rest in one overflow threat, and a day
of history, 200,000 events from gen_day.py, in the event store); that ratio
says whether the analyzer slows as records/ grows. --baseline DIR runs the rules cases with
another checkout's analyzer too, interleaved with this one's (before and
after a change, on the same machine in the same minutes). Nothing is sent on a network but loopback; the
destination addresses are documentation ranges and are never contacted.

USAGE: .venv/bin/python bench/analyzer.py [--quick] [--events N] [--baseline DIR]
"""

from __future__ import annotations

import itertools
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

from common import emit, parser, pyplot, save_figure  # noqa: E402
from gen_day import fill_store  # noqa: E402
from netsentinel import threats  # noqa: E402
from netsentinel.sightings import sighting_of  # noqa: E402
from netsentinel.records import ANALYZER_STATUS, EVENTS_DB, PENDING_THREATS  # noqa: E402
from netsentinel.store import RecordsStore  # noqa: E402
from netsentinel.testing.llm_standins import StandinServer  # noqa: E402

ROOT = HERE.parent
ANALYZER = ROOT / "llm_analyzer.py"
EPILOG = """examples:
  .venv/bin/python bench/analyzer.py --quick          # the CI size
  .venv/bin/python bench/analyzer.py                  # 100,000 events per run
  .venv/bin/python bench/analyzer.py --events 20000 --plot /tmp/analyzer.png
  .venv/bin/python bench/analyzer.py --no-llm --baseline /tmp/main   # main's code vs this one
"""
FULL_THREATS = 100_000     # threats of distinct actors put through the queue
FULL_DAY_EVENTS = 200_000  # a day of history in the event store


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


def fill_records(rec: Path, n_threats: int, day_events: int) -> dict:
    """records/ as a busy host has it: n_threats threats of distinct actors
    (a HIGH verdict each) through the review queue in flush-sized batches,
    and a day of history in the event store. Returns what it holds."""
    store = RecordsStore(rec)
    batch = []
    for i in range(n_threats):
        comm = f"actor{i}"
        ev = {"v": 1, "type": "connection", "ts": "2026-12-01T00:00:00.000000Z", "pid": 10000 + i,
              "uid": 1000, "comm": comm, "exe": f"/usr/local/bin/{comm}",
              "daddr": f"198.51.100.{i % 250 + 1}", "dport": 4444}
        t = {"level": "HIGH", "category": "suspicious_port", "rule_level": "HIGH",
             "rule_confidence": 0.8, "confidence": 0.8, "reason": f"{comm} connected to port 4444",
             "recommended_action": "review", "verdict_source": "rules", "backend": "rules",
             "rule_ids": ["suspicious-port"], "event": ev, "target": ev["daddr"],
             "dedupe_key": f"proc|connection|uid=1000|comm={comm}", "targets_sample": [ev["daddr"]]}
        t["sightings"] = [sighting_of(t)]
        batch.append((t, 1))
        if len(batch) == 2000 or i == n_threats - 1:
            threats.add_or_merge_many(store, batch)
            batch = []
    held = threats.list_threats(store)
    rows = fill_store(str(rec / EVENTS_DB), day_events) if day_events else 0
    return {"threats_added": n_threats, "queue_entries": len(held),
            "queue_open": sum(t.get("status") == "pending" for t in held),
            "overflow_count": next((t.get("count") for t in held
                                    if t.get("dedupe_key") == threats.OVERFLOW_KEY), 0),
            "pending_threats_mb": round((rec / PENDING_THREATS).stat().st_size / 1e6, 2),
            "store_rows": rows,
            "store_mb": round((rec / EVENTS_DB).stat().st_size / 1e6, 1) if day_events else 0}


def load_average() -> float:
    return round(os.getloadavg()[0], 2)


def run_case(name: str, events: str, n: int, extra: list[str], env: dict,
             rate: float | None = None, records: Path | None = None,
             analyzer: Path = ANALYZER) -> dict:
    """One analyzer run over the events (records/ a copy of `records`
    when given); samples its status file meanwhile."""
    with tempfile.TemporaryDirectory(prefix="nsbench-analyzer-") as d:
        rec = Path(d)
        if records is not None:
            shutil.copytree(records, rec, dirs_exist_ok=True)
        (rec / "filter_config.json").write_text("{}")
        load_before = load_average()
        cmd = [sys.executable, str(analyzer), "--records", str(rec), "--config",
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
    store = st.get("event_store") or {}
    if store.get("rows_buffered"):
        print(f"[bench analyzer] {name}: {store['rows_buffered']} rows not written when the analyzer "
              f"exited ({store.get('error') or 'the writer still busy'}): this case's events/s is "
              "not a measurement of the store", file=sys.stderr, flush=True)
    return {"case": name, "events": n, "fed_per_s": rate, "judged": judged, "seconds": round(seconds, 2),
            "load_average": [load_before, load_average()],
            "events_per_s": round(judged / seconds, 1),
            "exit_after_last_event_s": round(done - fed_at, 2), "counts": st["counts"],
            "llm_calls": llm["calls"], "cache_hits": llm["cache_hits"], "coalesced": llm["coalesced"],
            "queue_dropped": llm["queue_dropped"], "rate_limited": llm["rate_limited"],
            "max_queue_depth": depth["max"],
            "llm_calls_per_10k": round(llm["calls"] * 10000 / max(judged, 1), 1),
            "cache_hit_rate": round(llm["cache_hits"] / max(llm["submitted"], 1), 3),
            "rows_stored": store.get("rows_written", 0),
            # Verdicts the store never got (its queue's overflow; before, the
            # records thread's buffer): a row lost is a result, not a speed.
            "rows_dropped": store.get("rows_dropped", 0) + store.get("rows_dropped_before_store", 0),
            # Rows the writer still held when the analyzer gave up waiting
            # at exit (30 s): such a run's events/s is not the store's pace.
            "rows_not_written_at_exit": store.get("rows_buffered", 0),
            # The writer's own process (its CPU is also in the analyzer's, a waited child).
            "store_writer_cpu_s": store.get("writer_cpu_s"),
            "_rusage": (usage.ru_utime + usage.ru_stime, usage.ru_maxrss)}


def rules_cases(events: str, n: int, env: dict, full: Path, baseline: Path | None) -> list[dict]:
    """The rules run with records/ empty and full, side by side (and with
    the baseline checkout's analyzer, interleaved, when given)."""
    codes = [("", ANALYZER, env)]
    if baseline is not None:
        codes.insert(0, (" [baseline]", baseline / "llm_analyzer.py",
                         dict(env, PYTHONPATH=str(baseline))))
    out = []
    for label, records in (("rules, records/ empty", None), ("rules, records/ full", full)):
        for (store, store_args), (tag, analyzer, code_env) in itertools.product(
                (("", []), (", --no-store", ["--no-store"])), codes):
            name = f"{label}{store}{tag}"
            print(f"[bench analyzer] {name} ...", file=sys.stderr, flush=True)
            out.append(run_case(name, events, n, ["--backend", "rules", *store_args], code_env,
                                records=records, analyzer=analyzer))
    return out


def main() -> int:
    p = parser("analyzer", __doc__.split("\n\n")[1], EPILOG)
    p.add_argument("--events", type=int, help="events per run (default 100,000; quick 2,000)")
    p.add_argument("--llm-rate", type=float, default=2000.0,
                   help="events/s fed in the LLM run, like a live stream (default 2,000)")
    p.add_argument("--no-llm", action="store_true", help="the rules cases only")
    p.add_argument("--baseline", type=Path, metavar="DIR",
                   help="also run the rules cases with the analyzer of this checkout (e.g. main's)")
    args = p.parse_args()
    n = args.events or (2000 if args.quick else 100_000)
    started = time.time()
    events = make_events(n)
    print(f"[bench analyzer] {n} events, {len(events) / 1e6:.1f} MB of JSON lines", file=sys.stderr)
    env = dict(os.environ, ZHIPUAI_API_KEY="", OLLAMA_HOST="http://127.0.0.1:9", PYTHONUNBUFFERED="1",
               PYTHONPATH=str(ROOT))
    env.pop("NETSENTINEL_STORE_DSN", None)  # the event store in records/, as a host has it
    with tempfile.TemporaryDirectory(prefix="nsbench-analyzer-full-") as d:
        full = Path(d)
        n_threats, day_events = (2000, 20_000) if args.quick else (FULL_THREATS, FULL_DAY_EVENTS)
        print(f"[bench analyzer] filling records/: {n_threats} threats, a day of "
              f"{day_events} events in the store ...", file=sys.stderr, flush=True)
        held = fill_records(full, n_threats, day_events)
        print(f"[bench analyzer] records/ full holds {held}", file=sys.stderr, flush=True)
        runs = rules_cases(events, n, env, full, args.baseline)
    results = []
    cpu_before = 0.0
    for r in runs:   # getrusage(CHILDREN) accumulates: each run's CPU is the difference
        cpu_total, rss = r.pop("_rusage")
        r["cpu_s"], r["max_rss_mb"] = round(cpu_total - cpu_before, 2), round(rss / 1024, 1)
        cpu_before = cpu_total
        results.append(r)
    if not args.no_llm:
        print("[bench analyzer] with a 1 s stand-in LLM ...", file=sys.stderr, flush=True)
        with StandinServer("medium", delay=1.0) as server:
            r = run_case("llm (1 s/call)", events, n,
                         ["--backend", "openai", "--base-url", f"{server.url}/v1", "--model",
                          "standin-model", "--llm-scope", "all", "--workers", "2",
                          "--max-calls-per-minute", "60", "--timeout", "5"], env, rate=args.llm_rate)
        cpu_total, rss = r.pop("_rusage")
        # Its peak memory is the largest of all the runs' peaks (RUSAGE_CHILDREN).
        r["cpu_s"], r["max_rss_mb"] = round(cpu_total - cpu_before, 2), round(rss / 1024, 1)
        results.append(r)
    by_case = {x["case"]: x["events_per_s"] for x in results}
    tags = ["", " [baseline]"] if args.baseline else [""]
    ratios = {(tag.strip() or "this checkout") + store: round(
        by_case[f"rules, records/ full{store}{tag}"] / by_case[f"rules, records/ empty{store}{tag}"], 3)
        for tag in tags for store in ("", ", --no-store")}
    # What the store costs the analyzer: events/s with it over events/s without.
    store_ratios = {(tag.strip() or "this checkout") + f", records/ {state}": round(
        by_case[f"rules, records/ {state}{tag}"] / by_case[f"rules, records/ {state}, --no-store{tag}"], 3)
        for tag in tags for state in ("empty", "full")}
    rows = [[x["case"], x["judged"], x["seconds"], x["events_per_s"], x["exit_after_last_event_s"],
             x["cpu_s"], x["store_writer_cpu_s"] or "", x["rows_stored"], x["rows_dropped"], x["max_rss_mb"], x["llm_calls"], x["cache_hit_rate"], x["queue_dropped"],
             x["max_queue_depth"], x["llm_calls_per_10k"], "-".join(map(str, x["load_average"]))]
            for x in results]
    print(f"[bench analyzer] full/empty events/s: {ratios} (target: within 10%, >= 0.9)",
          file=sys.stderr)
    print(f"[bench analyzer] with the store / --no-store events/s: {store_ratios} "
          "(target: the store never the bottleneck, 1.0)", file=sys.stderr)
    emit("analyzer", args.quick, {"events": n, "llm_delay_s": 1.0, "workers": 2,
                                  "max_calls_per_minute": 60, "llm_scope": "all",
                                  "llm_feed_per_s": args.llm_rate, "drain_timeout_s": 5,
                                  "baseline": str(args.baseline) if args.baseline else None},
         results, started,
         ["case", "judged", "seconds", "events/s", "exit after EOF s", "cpu s",
          "store writer cpu s", "rows stored", "rows dropped", "max RSS MB",
          "LLM calls", "cache hit rate", "queue drops", "max queue", "calls/10k", "load avg"], rows,
         full_records=held, full_over_empty=ratios, store_over_no_store=store_ratios,
         target_events_per_s=25_000)
    if args.plot:
        plt = pyplot()
        fig, ax = plt.subplots(figsize=(7, 3.4))
        ax.barh([x["case"] for x in results], [x["events_per_s"] for x in results], color="#4c72b0")
        ax.axvline(25_000, color="#c44e52", linestyle="--", label="target 25,000/s")
        ax.set_xlabel("events judged per second")
        ax.set_title(f"llm_analyzer.py, {n:,} replayed events")
        ax.legend(loc="lower right")
        fig.tight_layout()
        save_figure(fig, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
