#!/usr/bin/env python3
"""bench/ban_latency.py - how long from writing a ban to the ban biting?

The real loader (unified_ebpf.py) runs in a throwaway namespace with its XDP
filter on the lab veth and its cgroup connect/sendmsg hooks. This process,
with one thread in each namespace, keeps three things going:
  - a UDP stream from the peer to the loader's host, one packet every
    --send-interval (sequence number + send time in each),
  - a receiver in the loader's namespace noting the last sequence received,
  - a UDP connect() towards the peer every --connect-interval (cgroup connect4
    hook, like TCP, but without a connection event that would wake the loader).
Each round it appends a ban of the peer's address to records/ban_commands.json
through RecordsStore.append_command (what the analyzer and dashboard call),
then measures
  - drop latency: write -> send time of the first packet that never arrived,
  - connect latency: write -> return of the first connect() failing with EPERM,
then unbans, waits for traffic to flow again (that time is reported too), and
starts the next round after a random pause (the loader polls every 50 ms, so
the phase is sampled evenly). p50/p90/p99/max over all rounds.

With --via dashboard the ban comes from a person's click instead: each round
seeds a pending CRITICAL threat for the peer, opens the dashboard's Review
page in headless Chromium (Debian's, driven by playwright) and clicks its
Approve button; the latencies are measured from the click, so they include
the dashboard's round trip (browser -> Streamlit -> records/) as well.

Under load (issue 19's targets):
  --preload N  the loader starts with N bans in banned_ips.json (11.0.0.1
               upwards, never the lab's 10.x), restored at start; the
               loader's idle CPU is measured over --idle-seconds before the
               rounds;
  --burst K    each round writes K ban commands one after another (K-1 of
               11.x addresses, the peer last), as an analyzer's burst of
               verdicts; the times are to the peer's ban, the last of them;
  --flood G    G bench/connect_load.py processes connect flat out from the
               loader's namespace to the peer's second address during the
               rounds (connection events the loader must read meanwhile).
With --flood or --preload the loader's stream goes to a file (not through
this process).
"""

from __future__ import annotations

import errno
import json
import math
import os
import random
import secrets
import socket
import struct
import subprocess
import sys
import threading
import time

from common import (ROOT, VENV_PY, Cleanup, LoaderProc, Progress, emit, enter_netns, lab_session,
                    loader_arg_option, need_root, parser, percentile, process_cpu_seconds, pyplot, save_figure, scratch_dir,
                    stop_process, style_axes, wait_until)
from crowdsec_pull import decision_addresses

from netsentinel import threats
from netsentinel.loader.bantable import SYNC_SLICE
from netsentinel.loader.enforceloop import SYNC_EVERY_S
from netsentinel.records import BANNED_IPS, DASHBOARD_LOG
from netsentinel.store import RecordsStore

NAME = "ban_latency"
EPILOG = """examples:
  sudo .venv/bin/python bench/ban_latency.py --quick     # 5 bans
  sudo .venv/bin/python bench/ban_latency.py             # 100 bans
  sudo .venv/bin/python bench/ban_latency.py --bans 300 --plot docs/img/bench-ban-latency.png

output: one JSON line on stdout ({"bench": "ban_latency", "summary": {...}, "results": [...]}),
a table on stderr.
"""
PORT = 40999          # the UDP stream's destination port on the loader's host
PROBE_PORT = 9        # connect() target on the peer
PKT = struct.Struct("!Qd")
ROUND_TIMEOUT = 3.0
PROBE_NICE = -10      # the probe threads' priority (see Traffic._guard)


class Traffic:
    """The three probe threads and what they saw (times: time.monotonic())."""

    def __init__(self, lab, send_interval: float, connect_interval: float):
        self.lab = lab
        self.send_interval, self.connect_interval = send_interval, connect_interval
        self.sent: list[float] = []          # index = sequence number
        self.last_seq = -1
        self.last_recv = 0.0
        self.connect_log: list[tuple[float, int]] = []   # (return time, errno) at each change
        self.stop = threading.Event()
        self.errors: list[str] = []
        self.threads = [threading.Thread(target=self._guard, args=(f,), daemon=True)
                        for f in (self._send, self._recv, self._connect)]
        self._ready = threading.Barrier(len(self.threads) + 1)

    def start(self) -> None:
        for t in self.threads:
            t.start()
        self._ready.wait(timeout=10)

    def close(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=5)

    def _guard(self, fn) -> None:
        # The probes time the loader, not their own wait for a CPU: beside
        # --flood's processes (which inherit this process's nice) a probe at
        # the same priority was seen sending nothing for 200 ms, which the
        # round then counted as the ban's latency. They sleep between probes.
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, PROBE_NICE)
        try:
            fn()
        except Exception as e:  # reported in the result, never silently lost
            self.errors.append(f"{fn.__name__}: {e}")
            self.stop.set()

    def _send(self) -> None:
        enter_netns(self.lab.peer)
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind((self.lab.peer4, 0))
        self._ready.wait()
        dst = (self.lab.dut4, PORT)
        while not self.stop.is_set():
            t = time.monotonic()
            self.sent.append(t)
            s.sendto(PKT.pack(len(self.sent) - 1, t), dst)
            time.sleep(self.send_interval)
        s.close()

    def _recv(self) -> None:
        enter_netns(self.lab.dut)
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind((self.lab.dut4, PORT))
        s.settimeout(0.2)
        self._ready.wait()
        while not self.stop.is_set():
            try:
                data = s.recv(64)
            except socket.timeout:
                continue
            seq, _ = PKT.unpack(data[:PKT.size])
            self.last_seq, self.last_recv = max(self.last_seq, seq), time.monotonic()
        s.close()

    def _connect(self) -> None:
        enter_netns(self.lab.dut)
        self._ready.wait()
        last = None
        while not self.stop.is_set():
            # UDP connect(): the same cgroup connect4 hook as TCP, but it fires no
            # connection event; 1000 events a second would wake the loader's
            # poll early and make bans look faster than on an idle machine.
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            err = s.connect_ex((self.lab.peer4, PROBE_PORT))
            t = time.monotonic()
            s.close()
            blocked = err == errno.EPERM
            if blocked != last:
                self.connect_log.append((t, err))
                last = blocked
            time.sleep(self.connect_interval)

    # ---- queries
    def flowing(self) -> bool:
        return time.monotonic() - self.last_recv < 0.02

    def connect_blocked_since(self, t0: float) -> float | None:
        """Return time of the first connect() refused with EPERM after t0."""
        return next((t for t, err in list(self.connect_log) if t >= t0 and err == errno.EPERM), None)

    def connect_allowed(self) -> bool:
        return bool(self.connect_log) and self.connect_log[-1][1] != errno.EPERM

    def first_lost_send_time(self, t0: float, quiet: float = 0.05) -> float | None:
        """Once nothing has arrived for `quiet` s: send time of the packet after the last received."""
        if time.monotonic() - max(self.last_recv, t0) < quiet:
            return None
        nxt = self.last_seq + 1
        return self.sent[nxt] if nxt < len(self.sent) else None


def wait(pred, timeout: float, traffic: Traffic):
    """pred's value, or None at the deadline (a missed round, counted).
    Polled every millisecond: the poll is the measurement's resolution."""
    def probes_alive() -> None:
        if traffic.errors:
            raise RuntimeError("probe thread failed: " + "; ".join(traffic.errors))
    return wait_until(pred, timeout, 0.001, "a round's condition", each=probes_alive, give_up=True)


def ban_by_file(store: RecordsStore, ip: str, i: int, others: list[str] = ()) -> tuple[float, float]:
    """Append the ban command(s) as the analyzer/dashboard code does, the
    peer's last: (t0, written)."""
    time.sleep(random.uniform(0, 0.05))
    t0 = time.monotonic()
    for other in others:
        store.append_command({"action": "ban", "ip": other, "reason": f"bench burst {i}", "source": "bench"})
    store.append_command({"action": "ban", "ip": ip, "reason": f"bench round {i}", "source": "bench"})
    return t0, time.monotonic()


BENCH_TOKEN = secrets.token_urlsafe(24)


class DashboardClicker:
    """A pending threat per round, approved by a click on the Review page."""

    def __init__(self, store: RecordsStore, page, url: str):
        self.store, self.page, self.url = store, page, url

    def __call__(self, store: RecordsStore, ip: str, i: int) -> tuple[float, float]:
        threats.add_or_merge(self.store, {
            "level": "CRITICAL", "category": "bench", "confidence": 1.0, "target": ip,
            "reason": f"bench round {i}", "recommended_action": "ban", "verdict_source": "rules",
            "backend": "rules", "dedupe_key": f"bench|{i}",
            "event": {"type": "connection", "daddr": ip, "dport": 9, "comm": "bench", "pid": 1}})
        self.page.goto(f"{self.url}/?token={BENCH_TOKEN}&page=review")  # each goto signs in anew
        button = self.page.locator("[data-testid=stForm]", has_text=f"also trust {ip}") \
            .get_by_role("button", name="Approve (ban)")
        button.wait_for()
        time.sleep(random.uniform(0, 0.05))
        t0 = time.monotonic()
        button.click()
        return t0, time.monotonic()


def one_round(i: int, store: RecordsStore, lab, traffic: Traffic, ban=ban_by_file,
              burst: list[str] = ()) -> dict:
    ip = lab.peer4
    if not wait(lambda: traffic.flowing() and traffic.connect_allowed(), ROUND_TIMEOUT, traffic):
        raise RuntimeError(f"round {i}: traffic did not flow before the ban")
    t0, t_written = ban(store, ip, i, burst) if burst else ban(store, ip, i)
    t_conn = wait(lambda: traffic.connect_blocked_since(t0), ROUND_TIMEOUT, traffic)
    t_drop = wait(lambda: traffic.first_lost_send_time(t0), ROUND_TIMEOUT, traffic)
    row = {"round": i, "write_ms": round((t_written - t0) * 1e3, 3),
           "drop_ms": round((t_drop - t0) * 1e3, 3) if t_drop else None,
           "connect_ms": round((t_conn - t0) * 1e3, 3) if t_conn else None,
           # The loader's own share: from the end of the (last) write. Under a
           # flood the writing process itself waits for a CPU.
           "drop_after_write_ms": round(max(0.0, t_drop - t_written) * 1e3, 3) if t_drop else None}
    for other in burst:
        store.append_command({"action": "unban", "ip": other, "source": "bench"})
    t1 = time.monotonic()
    store.append_command({"action": "unban", "ip": ip, "source": "bench"})
    t_back = wait(lambda: traffic.last_recv > t1 and traffic.connect_allowed() and time.monotonic(),
                  ROUND_TIMEOUT, traffic)
    row["unban_ms"] = round((t_back - t1) * 1e3, 3) if t_back else None
    return row


def summarize(rows: list[dict], key: str) -> dict:
    v = [r[key] for r in rows if r.get(key) is not None]
    return {"n": len(v), "missed": len(rows) - len(v),
            **{f"p{q}": percentile(v, q) for q in (50, 90, 99)},
            "min": min(v) if v else None, "max": max(v) if v else None,
            "mean": round(sum(v) / len(v), 3) if v else None}


def plot(rows: list[dict], path: str, via: str = "file") -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for key, label in (("drop_ms", "first dropped packet"), ("connect_ms", "connect() fails (EPERM)"),
                       ("unban_ms", "traffic flows again after unban")):
        v = sorted(r[key] for r in rows if r.get(key) is not None)
        if v:
            ax.plot(v, [(j + 1) / len(v) for j in range(len(v))], label=label)
    start = ("ms after the click on Approve in the dashboard" if via == "dashboard"
             else "ms after the command was written to records/ban_commands.json")
    style_axes(ax, start, "fraction of bans",
               f"ban latency over {len(rows)} bans (loader polls every 50 ms)", log_x=False)
    save_figure(fig, path)


def start_loader(lab, cleanup: Cleanup, tmp, preload: int = 0, to_file: bool = False,
                 extra: tuple[str, ...] = ()) -> tuple:
    """The loader on the lab veth with fresh records/ (and `preload` saved
    bans): (records, config, startup facts, loader pid)."""
    records = tmp / "records"
    records.mkdir()
    cfg = tmp / "filter_config.json"
    cfg.write_text("{}\n")
    if preload:
        (records / BANNED_IPS).write_text(json.dumps(
            {a: {"reason": "bench preload", "source": "bench"} for a in decision_addresses(preload)}))
    if not to_file:
        loader = LoaderProc(lab, records, cfg, *extra, echo=False)
        cleanup.push(loader.stop)
        startup = loader.wait_started()
        pid = loader.proc.pid
    else:   # a flood's events would swamp this process: the stream goes to a file
        out = tmp / "loader.jsonl"
        cmd = ["ip", "netns", "exec", lab.dut, VENV_PY, "-u", str(ROOT / "unified_ebpf.py"),
               "--records", str(records), "--config", str(cfg), "-i", lab.dut_if,
               "--pin-dir", lab.pin_root, *extra]
        with open(out, "wb") as fo, open(tmp / "loader.err", "wb") as fe:
            proc = subprocess.Popen(cmd, stdout=fo, stderr=fe, cwd=ROOT)
        cleanup.push(stop_process, proc, 15, 60)

        def started():
            if proc.poll() is not None:
                raise RuntimeError(f"loader exited: {(tmp / 'loader.err').read_text()[-300:]}")
            with open(out, "rb") as f:
                first = f.readline()
            return json.loads(first) if first.endswith(b"\n") else None
        startup, pid = wait_until(started, 180, 0.1, "loader startup"), proc.pid
    return records, cfg, {k: startup.get(k) for k in ("xdp_mode", "capture_mode", "cgroup_block",
                                                      "bans_restored")}, pid


def start_flood(lab, n: int, seconds: float, cleanup: Cleanup) -> list:
    gens = [subprocess.Popen(["ip", "netns", "exec", lab.dut, VENV_PY, str(ROOT / "bench" / "connect_load.py"),
                              lab.peer4b, "--rate", "0", "--seconds", str(seconds)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(n)]
    for g in gens:
        cleanup.push(stop_process, g, 15, 10)
    return gens


def dashboard_clicker(cleanup: Cleanup, progress: Progress, store: RecordsStore, records, cfg,
                      tmp) -> DashboardClicker:
    """The dashboard on these records, and Chromium on its Review page."""
    from netsentinel.testing.dashboard_browser import chromium_page, dashboard_server
    server = dashboard_server(records, cfg, tmp / DASHBOARD_LOG, refresh=0, token=BENCH_TOKEN)
    url = server.__enter__()
    cleanup.push(server.__exit__, None, None, None)
    browser = chromium_page()
    page = browser.__enter__()
    cleanup.push(browser.__exit__, None, None, None)
    progress(f"dashboard at {url}, Chromium driving its Review page")
    return DashboardClicker(store, page, url)


def run_rounds(args, bans: int, progress: Progress, cleanup: Cleanup, extra: dict) -> list[dict]:
    rows: list[dict] = []
    with lab_session(cleanup, progress) as lab:
        tmp = scratch_dir(cleanup)
        records, cfg, extra["loader"], pid = start_loader(lab, cleanup, tmp, args.preload,
                                                          bool(args.flood or args.preload),
                                                          tuple(args.loader_arg))
        progress(f"loader up ({extra['loader']}); {bans} bans")
        if args.preload:
            # Idle: after the restore has settled, its first counter sync
            # included: one pass over every restored ban, SYNC_SLICE bans each
            # SYNC_EVERY_S (50,000 bans: 13 slices, 26 s). Before this wait the
            # idle figure was that pass's cost.
            time.sleep(3.0 + SYNC_EVERY_S * math.ceil(args.preload / SYNC_SLICE))
            cpu0, w0, load0 = process_cpu_seconds(pid), time.monotonic(), os.getloadavg()[0]
            time.sleep(args.idle_seconds)
            extra["idle_cpu_pct"] = round(100 * (process_cpu_seconds(pid) - cpu0) / (time.monotonic() - w0), 2)
            extra["idle_loadavg_1m"] = [round(load0, 2), round(os.getloadavg()[0], 2)]
            progress(f"{args.preload:,} bans restored; loader idle CPU {extra['idle_cpu_pct']}% "
                     f"(load {extra['idle_loadavg_1m']})")
        store = RecordsStore(records)
        traffic = Traffic(lab, args.send_interval, args.connect_interval)
        traffic.start()
        cleanup.push(traffic.close)
        ban = ban_by_file
        if args.via == "dashboard":
            ban = dashboard_clicker(cleanup, progress, store, records, cfg, tmp)
        burst_pool = decision_addresses(args.preload + args.burst)[args.preload:]
        burst = burst_pool[:max(0, args.burst - 1)]
        if args.flood:
            cpu0, w0 = process_cpu_seconds(pid), time.monotonic()
            gens = start_flood(lab, args.flood, 3600, cleanup)
            time.sleep(2.0)   # the flood is under way before the first ban
        extra["loadavg_1m_before"] = round(os.getloadavg()[0], 2)
        for i in range(bans):
            rows.append(one_round(i, store, lab, traffic, ban, burst))
            if (i + 1) % 10 == 0 or i + 1 == bans:
                r = rows[-1]
                progress(f"ban {i + 1}/{bans}: drop {r['drop_ms']} ms, connect {r['connect_ms']} ms")
        extra["packets_sent"] = len(traffic.sent)
        extra["loadavg_1m_after"] = round(os.getloadavg()[0], 2)
        if args.flood:
            extra["flood_loader_cpu_pct"] = round(100 * (process_cpu_seconds(pid) - cpu0)
                                                  / (time.monotonic() - w0), 1)
            for g in gens:
                stop_process(g, 15, 10)
    return rows


def main() -> int:
    p = parser(NAME, __doc__, EPILOG)
    p.add_argument("--bans", type=int, help="rounds (default 100, or 20 via the dashboard; quick 5/2)")
    p.add_argument("--via", choices=("file", "dashboard"), default="file",
                   help="file: append to ban_commands.json (default); dashboard: click Approve "
                        "on the Review page in headless Chromium")
    p.add_argument("--send-interval", type=float, default=0.0005,
                   help="seconds between UDP probe packets (default %(default)s)")
    p.add_argument("--connect-interval", type=float, default=0.001,
                   help="seconds between connect() probes (default %(default)s)")
    p.add_argument("--preload", type=int, default=0, help="bans restored at start (e.g. 50000)")
    p.add_argument("--burst", type=int, default=1, help="ban commands written per round, the peer's last")
    p.add_argument("--flood", type=int, default=0, help="flat-out connecting processes during the rounds")
    loader_arg_option(p)
    p.add_argument("--idle-seconds", type=float, default=10.0,
                   help="with --preload: seconds the loader's idle CPU is measured (default %(default)s)")
    args = p.parse_args()
    need_root(NAME)
    dash = args.via == "dashboard"
    bans = args.bans or ((2 if dash else 5) if args.quick else (20 if dash else 100))
    started, progress, cleanup = time.time(), Progress(NAME), Cleanup()
    extra: dict = {}
    try:
        rows = run_rounds(args, bans, progress, cleanup, extra)
    finally:
        cleanup.run()
    summary = {k: summarize(rows, k) for k in ("drop_ms", "connect_ms", "unban_ms", "write_ms",
                                                "drop_after_write_ms")}
    if args.plot:
        plot(rows, args.plot, args.via)
    table = [[k, s["n"], s["p50"], s["p90"], s["p99"], s["max"]] for k, s in summary.items()]
    emit(NAME, args.quick, {"bans": bans, "via": args.via, "send_interval_s": args.send_interval,
                            "preload": args.preload, "burst": args.burst, "flood": args.flood,
                            "connect_interval_s": args.connect_interval, "loader_poll_ms": 50,
                            "loader_args": args.loader_arg},
         rows, started, ["ms after click" if dash else "ms after write", "n", "p50", "p90", "p99", "max"],
         table,
         summary=summary, **extra)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
