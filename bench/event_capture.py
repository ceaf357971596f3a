#!/usr/bin/env python3
"""bench/event_capture.py - does the connection monitor keep up with N connects/s?

The real loader (unified_ebpf.py --no-xdp: the monitor alone) runs in a
throwaway namespace with its event stream going to a file. bench/connect_load.py
makes outbound TCP connects from that namespace at 1k, 10k, 50k/s and flat
out; for each step this counts the connection events that came out for the
generator's pid (connects received vs connects made = loss; an event may
stand for several connects, its "count": the kernel folds identical ones
while the ring buffer is full), the loader's
reported kernel-buffer losses (`lost` events), and the loader's CPU time
(/proc/PID/stat) from the start of the step until its output went quiet.
Repeated per --buffer-pages setting (buffer pages per CPU).

Side by side (--compare bpftrace, the default when bpftrace is installed):
a bpftrace one-liner on the same tracepoint, printing pid, comm, address and
port for each connect, runs during the same steps, its output to a file too;
its events received and CPU per event are reported in the same row, and the
loader's CPU per event as a ratio to it (the target: within 3x). The loader
runs with --capture tracepoint so both read the same tracepoint. Loadavg
(1 min) is recorded per step: on a shared machine, compare ratios.

The stream goes to a file, not a pipe read by this process, so a slow reader
here cannot be mistaken for the loader falling behind.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import time

from common import (ROOT, VENV_PY, Cleanup, Progress, emit, lab_session, loader_arg_option, need_root, parser,
                    process_cpu_seconds, pyplot, save_figure, scratch_dir, stop_process, style_axes,
                    wait_until)

NAME = "event_capture"
EPILOG = """examples:
  sudo .venv/bin/python bench/event_capture.py --quick
  sudo .venv/bin/python bench/event_capture.py                       # 1k, 10k, 50k/s, max; 64 and 1024 pages
  sudo .venv/bin/python bench/event_capture.py --rates 5000,20000 --buffer-pages 256 --seconds 10

output: one JSON line on stdout ({"bench": "event_capture", "results": [...]}), a table on stderr.
"""
PAGE = resource.getpagesize()
# The comparison: the cheapest useful consumer of the same events.
BPFTRACE = ('tracepoint:sock:inet_sock_set_state /args->protocol == 6 && args->newstate == 2/ '
            '{ printf("%d %s %s %d\\n", pid, comm, ntop(args->daddr), args->dport); }')


class Bpftrace:
    """The one-liner, its output in a file; count() = lines for pids to addr."""

    def __init__(self, tmp, cleanup: Cleanup):
        self.path = tmp / "bpftrace.out"
        self.fo = open(self.path, "wb")
        self.proc = subprocess.Popen(["bpftrace", "-B", "line", "-e", BPFTRACE], stdout=self.fo,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        cleanup.push(stop_process, self.proc, 2, 20)
        wait_until(lambda: b"Attaching" in self.path.read_bytes() or self.proc.poll() is not None,
                   timeout=60, what="bpftrace attached")
        if self.proc.poll() is not None:
            raise RuntimeError("bpftrace exited: " + self.path.read_text()[-300:])
        self.offset = self.path.stat().st_size

    def count(self, pids: set, addr: str) -> tuple[int, int, int]:
        """(events for pids to addr, losses bpftrace reported, lines of any
        process) since the last count."""
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            data = f.read()
        data = data[:data.rfind(b"\n") + 1]
        self.offset += len(data)
        got = lost = notes = 0
        lines = data.splitlines()
        for line in lines:
            parts = line.split()
            if line.startswith(b"Lost ") and len(parts) > 1 and parts[1].isdigit():
                lost += int(parts[1])
                notes += 1
            elif len(parts) >= 4 and parts[0].isdigit() and int(parts[0]) in pids \
                    and parts[-2] == addr.encode():
                got += 1
        return got, lost, len(lines) - notes


class StreamFile:
    """Incremental reader of the loader's JSON-lines output file."""

    def __init__(self, path):
        self.path, self.offset, self.partial = path, 0, b""

    def new_events(self):
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            data = f.read()
        self.offset += len(data)
        lines = (self.partial + data).split(b"\n")
        self.partial = lines.pop()
        return [json.loads(line) for line in lines if line]


def start_loader(lab, tmp, pages: int, cleanup: Cleanup, capture: str = "tracepoint",
                 extra: tuple[str, ...] = ()):
    cfg = tmp / "filter_config.json"
    cfg.write_text("{}\n")
    out = tmp / f"events-{pages}.jsonl"
    cmd = ["ip", "netns", "exec", lab.dut, VENV_PY, "-u", str(ROOT / "unified_ebpf.py"),
           "--records", str(tmp / "records"), "--config", str(cfg), "--no-xdp",
           "--buffer-pages", str(pages), "--stats-interval", "1", "--capture", capture, *extra]
    (tmp / "records").mkdir(exist_ok=True)
    with open(out, "wb") as fo, open(tmp / f"loader-{pages}.err", "wb") as fe:
        proc = subprocess.Popen(cmd, stdout=fo, stderr=fe, cwd=ROOT)
    cleanup.push(stop_process, proc, 15, 20)
    stream = StreamFile(out)
    events = []

    def started():
        if proc.poll() is not None:
            raise RuntimeError(f"loader exited ({proc.returncode}): "
                               + (tmp / f"loader-{pages}.err").read_text()[-500:])
        events.extend(stream.new_events())
        return any(e["type"] == "startup" for e in events)
    wait_until(started, timeout=90, what="loader startup")
    startup = next(e for e in events if e["type"] == "startup")
    return proc, stream, startup


def step(lab, proc, stream: StreamFile, rate: int, seconds: float, generators: int,
         bt: Bpftrace | None = None) -> dict:
    stream.new_events()   # skip what came before this step
    if bt:
        bt.count(set(), "")
        bt_cpu0 = process_cpu_seconds(bt.proc.pid)
    load0 = os.getloadavg()[0]
    cpu0, t0 = process_cpu_seconds(proc.pid), time.monotonic()
    # Several generator processes: one Python process tops out near 20-25k connects/s.
    gens = [subprocess.Popen(["ip", "netns", "exec", lab.dut, VENV_PY, str(ROOT / "bench" / "connect_load.py"),
                              lab.peer4, "--rate", str(rate / generators), "--seconds", str(seconds)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(generators)]
    outs = []
    for g in gens:
        out, err = g.communicate(timeout=seconds + 60)
        if g.returncode != 0:
            raise RuntimeError(f"connect_load failed: {err.strip()[-300:]}")
        outs.append(json.loads(out))
    pids = {o["pid"] for o in outs}
    gen = {"made": sum(o["made"] for o in outs), "errors": sum(o["errors"] for o in outs),
           "secs": max(o["secs"] for o in outs)}
    gen["rate"] = round(gen["made"] / gen["secs"], 1)
    # The tracepoint sees every process's connects (other work on a shared
    # machine too): CPU per event is taken over all the events each consumer
    # handled, loss over the generators' own.
    # A connection event may stand for several connects (its "count": the
    # kernel folded identical ones while the ring buffer was full).
    received = ev_lines = lost = bt_got = bt_lost = seen = seen_connects = bt_seen = 0
    quiet_since = time.monotonic()
    # Drain: the loader may still be working through its buffer; stop once
    # nothing new has come for 1 s (at most 30 s).
    while time.monotonic() - quiet_since < 1.0 and time.monotonic() - t0 < seconds + 30:
        evs = stream.new_events()
        for e in evs:
            n = e.get("count", 1) if e["type"] == "connection" else 0
            seen += bool(n)
            seen_connects += n
            if n and e["pid"] in pids and e["daddr"] == lab.peer4:
                received += n
                ev_lines += 1
                quiet_since = time.monotonic()
            elif e["type"] == "lost":
                lost += e["count"]
        if bt:
            got, gone, lines = bt.count(pids, lab.peer4)
            bt_got, bt_lost, bt_seen = bt_got + got, bt_lost + gone, bt_seen + lines
            if got:
                quiet_since = time.monotonic()
        time.sleep(0.1)
    busy_until = quiet_since
    cpu_s = process_cpu_seconds(proc.pid) - cpu0
    wall = max(busy_until - t0, gen["secs"])
    side = {}
    if bt:
        bt_cpu = process_cpu_seconds(bt.proc.pid) - bt_cpu0
        bt_us = round(bt_cpu * 1e6 / bt_seen, 1) if bt_seen else None
        us = cpu_s * 1e6 / seen if seen else None
        side = {"bpftrace_received": bt_got, "bpftrace_lost_reported": bt_lost, "bpftrace_all_events": bt_seen,
                "bpftrace_cpu_s": round(bt_cpu, 3), "bpftrace_us_per_event": bt_us,
                "us_ratio_to_bpftrace": round(us / bt_us, 2) if us and bt_us else None}
    return {"loadavg_1m": [round(load0, 2), round(os.getloadavg()[0], 2)], **side,
            "rate_target": rate or "max", "rate_made": gen["rate"], "made": gen["made"],
            "connect_errors": gen["errors"], "received": received, "received_events": ev_lines,
            "missing": gen["made"] - received,
            "loss_pct": round(100 * (gen["made"] - received) / gen["made"], 3) if gen["made"] else None,
            "lost_reported": lost, "loader_cpu_s": round(cpu_s, 3),
            "loader_cpu_pct": round(100 * cpu_s / wall, 1),
            "loader_all_events": seen,
            "loader_us_per_event": round(cpu_s * 1e6 / seen, 1) if seen else None,
            "loader_all_connects": seen_connects,
            "loader_us_per_connect": round(cpu_s * 1e6 / seen_connects, 1) if seen_connects else None,
            "drain_s": round(max(0.0, busy_until - t0 - gen["secs"]), 2)}


def plot(rows: list[dict], path: str) -> None:
    plt = pyplot()
    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 4.5))
    for pages in sorted({r["buffer_pages"] for r in rows}):
        pts = sorted((r["rate_made"], r) for r in rows if r["buffer_pages"] == pages)
        xs = [x for x, _ in pts]
        a.plot(xs, [r["received"] / r["made"] * 100 for _, r in pts], marker="o", label=f"{pages} pages/CPU")
        b.plot(xs, [r["loader_cpu_pct"] for _, r in pts], marker="o", label=f"{pages} pages/CPU")
    style_axes(a, "connects per second (achieved)", "% of connects seen as events", "event capture")
    style_axes(b, "connects per second (achieved)", "loader CPU, % of one core", "loader cost")
    save_figure(fig, path)


def main() -> int:
    p = parser(NAME, __doc__, EPILOG)
    p.add_argument("--rates", help="comma-separated connects/s, 0 = flat out (default 1000,10000,50000,0; "
                   "quick 200,1000)")
    p.add_argument("--buffer-pages", help="comma-separated perf buffer pages per CPU, powers of two "
                   "(default 64,1024; quick 64)")
    p.add_argument("--seconds", type=float, help="seconds per step (default 5; quick 0.5)")
    p.add_argument("--generators", type=int, default=2,
                   help="connect_load.py processes sharing each rate (default %(default)s)")
    p.add_argument("--compare", choices=("bpftrace", "none"),
                   help="run a bpftrace one-liner side by side (default: bpftrace if installed)")
    p.add_argument("--capture", choices=("tracepoint", "kprobe", "auto"), default="tracepoint",
                   help="the loader's --capture (default %(default)s: bpftrace's tracepoint)")
    loader_arg_option(p)
    args = p.parse_args()
    compare = args.compare or ("bpftrace" if shutil.which("bpftrace") else "none")
    need_root(NAME)
    rates = [int(x) for x in (args.rates or ("200,1000" if args.quick else "1000,10000,50000,0")).split(",")]
    pages_list = [int(x) for x in (args.buffer_pages or ("64" if args.quick else "64,1024")).split(",")]
    if any(n <= 0 or n & (n - 1) for n in pages_list):
        p.error("--buffer-pages values must be powers of two")
    seconds = args.seconds or (0.5 if args.quick else 5.0)
    started, progress, cleanup = time.time(), Progress(NAME), Cleanup()
    rows: list[dict] = []
    modes, idle = {}, {}
    try:
        with lab_session(cleanup, progress) as lab:
            tmp = scratch_dir(cleanup)
            for pages in pages_list:
                proc, stream, startup = start_loader(lab, tmp, pages, cleanup, args.capture,
                                                       tuple(args.loader_arg))
                bt = Bpftrace(tmp, cleanup) if compare == "bpftrace" else None
                modes[pages] = startup["capture_mode"]
                cpu0 = process_cpu_seconds(proc.pid)
                time.sleep(1.0)
                idle[pages] = round(100 * (process_cpu_seconds(proc.pid) - cpu0), 1)
                progress(f"loader up: capture {startup['capture_mode']}, {pages} pages/CPU "
                         f"({pages * PAGE // 1024} KiB per CPU); idle CPU {idle[pages]}%")
                for rate in rates:
                    row = {"buffer_pages": pages, "buffer_kib_per_cpu": pages * PAGE // 1024,
                           **step(lab, proc, stream, rate, seconds, args.generators, bt)}
                    rows.append(row)
                    progress(f"{pages} pages, {row['rate_made']:,.0f} connects/s: {row['received']:,}/"
                             f"{row['made']:,} events ({row['loss_pct']}% lost), loader CPU "
                             f"{row['loader_cpu_pct']}%, {row['loader_us_per_event']} us/event"
                             + (f"; bpftrace {row['bpftrace_received']:,} events, "
                                f"{row['bpftrace_us_per_event']} us/event (ratio "
                                f"{row['us_ratio_to_bpftrace']})" if bt else "")
                             + f"; load {row['loadavg_1m']}")
                stop_process(proc, 15, 20)
                if bt:
                    stop_process(bt.proc, 2, 20)
    finally:
        cleanup.run()
    if args.plot:
        plot(rows, args.plot)
    table = [[r["buffer_pages"], r["rate_target"], r["rate_made"], r["made"], r["received"],
              r["received_events"], r["loss_pct"],
              r["lost_reported"], r["loader_cpu_pct"], r["loader_us_per_event"], r["loader_us_per_connect"],
              r.get("bpftrace_received"), r.get("bpftrace_us_per_event"), r.get("us_ratio_to_bpftrace"),
              r["loadavg_1m"][0]] for r in rows]
    emit(NAME, args.quick, {"rates": rates, "buffer_pages": pages_list, "page_bytes": PAGE, "loader_args": args.loader_arg,
                            "seconds": seconds, "generators": args.generators, "capture_mode": modes,
                            "loader_flags": f"--no-xdp --capture {args.capture}", "compare": compare,
                            "loader_idle_cpu_pct": idle},
         rows, started,
         ["pages", "target/s", "made/s", "made", "connects received", "in events", "loss %", "lost (kernel)",
          "loader CPU %", "us/event", "us/connect", "bpftrace events", "bpftrace us/event", "ratio", "load 1m"], table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
