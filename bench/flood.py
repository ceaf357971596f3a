"""bench/flood.py - the flood of bench/drop_rate.py (also bench/stack_cost.py's):
trafgen (skbs) or live XDP frames (no skb, bench/live_frames.py) from the
lab's peer, pinned to one CPU, and its measurement: each filter's counter
and that CPU's softirq time over fixed windows (medians)."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

from common import Cleanup, Progress, cpu_delta, cpu_times, sh, stop_process
from xdp_refs import LiveUnsupported, start_live


def mac_of(ns: str, ifc: str) -> str:
    return json.loads(sh("ip", "-n", ns, "-j", "link", "show", ifc).stdout)[0]["address"]


def in_ns(lab, *args: str, stdin: str | None = None, timeout: float = 600) -> str:
    r = subprocess.run(["ip", "netns", "exec", lab.dut, *args], input=stdin, capture_output=True,
                       text=True, timeout=timeout)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(args[:3])} failed: {r.stderr.strip()[:300]}")
    return r.stdout


def start_flood(lab, cpu: int, max_packets: int, cfg_path: Path, cleanup: Cleanup,
                source: str = "trafgen") -> subprocess.Popen:
    if source == "live":
        return start_live(lab, cpu, mac_of(lab.dut, lab.dut_if), cleanup)
    # cpu(N): only trafgen's worker on CPU N sends; -P covers CPUs 0..N.
    cfg_path.write_text(
        f"cpu({cpu}): {{ eth(da={mac_of(lab.dut, lab.dut_if)}, sa={mac_of(lab.peer, lab.peer_if)}), "
        f"ipv4(sa={lab.peer4}, da={lab.dut4}, ttl=64), udp(sp=4000, dp=9), fill(0, 18) }}\n")
    proc = subprocess.Popen(
        ["ip", "netns", "exec", lab.peer, "trafgen", "-o", lab.peer_if, "-i", str(cfg_path),
         "-P", str(cpu + 1), "--no-sock-mem", "--notouch-irq", "-n", str(max_packets)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    cleanup.push(stop_process, proc, signal.SIGINT, 10, True)
    return proc


def timed_read(read) -> tuple[int, float]:
    """A counter and when it was read (the middle of a read that takes a while)."""
    t = time.monotonic()
    c = read()
    return c, (t + time.monotonic()) / 2


def window(read, args) -> dict:
    c0, t0 = timed_read(read)
    cpu0 = cpu_times()
    time.sleep(args.window)
    cpu1 = cpu_times()
    c1, t1 = timed_read(read)
    secs, drops = t1 - t0, c1 - c0
    rx = cpu_delta(cpu0, cpu1, args.cpu)
    return {"secs": secs, "drops": drops, "rx": rx,
            "others": {c: cpu_delta(cpu0, cpu1, c)["softirq"] / secs * 100 for c in cpu0 if c != args.cpu}}


def flood_options(p, repeat_help: str) -> None:
    """The flood's command-line options (also bench/stack_cost.py's)."""
    p.add_argument("--window", type=float, help="seconds per measured window (default 2; quick 0.5)")
    p.add_argument("--repeat", type=int, help=f"{repeat_help} (default 3; quick 1)")
    p.add_argument("--warmup", type=float, help="seconds of flood before measuring (default 1; quick 0.3)")
    p.add_argument("--cpu", type=int, default=1, help="CPU the flood and its receive path run on (default 1)")
    p.add_argument("--max-packets", type=int, help="trafgen packet cap per run (default 30M; quick 3M)")


def flood_defaults(args) -> None:
    args.window = args.window or (0.5 if args.quick else 2.0)
    args.repeat = args.repeat or (1 if args.quick else 3)
    args.warmup = args.warmup or (0.3 if args.quick else 1.0)
    args.max_packets = args.max_packets or (3_000_000 if args.quick else 30_000_000)


def median(v: list[float]) -> float:
    s = sorted(v)
    return (s[(len(s) - 1) // 2] + s[len(s) // 2]) / 2


def flood_windows(lab, read, args, cfg_path: Path, cleanup: Cleanup) -> list[dict]:
    flood = start_flood(lab, args.cpu, args.max_packets, cfg_path, cleanup, getattr(args, "source", "trafgen"))
    try:
        time.sleep(args.warmup)
        if flood.poll() is not None:
            raise RuntimeError(f"the flood exited ({flood.returncode}): {flood.stderr.read()[-300:]}")
        return [window(read, args) for _ in range(args.repeat)]
    finally:
        stop_process(flood, group=True)


def measure(lab, read, args, cfg_path: Path, cleanup: Cleanup) -> dict:
    """--repeat back-to-back windows under one flood; medians, plus each window's drops/s.
    A window with nothing dropped means the flood stalled (seen once with native
    XDP on veth: the sender's queue stopped and was not woken), not a result:
    the flood is restarted, up to twice, and the retries are reported."""
    for retries in range(3):
        ws = flood_windows(lab, read, args, cfg_path, cleanup)
        if all(w["drops"] > 0 for w in ws):
            break
    rates = [w["drops"] / w["secs"] for w in ws]

    def pct(key):
        return round(median([w["rx"][key] / w["secs"] * 100 for w in ws]), 1)

    def ns_per_drop(*keys):
        v = [sum(w["rx"][k] for k in keys) * 1e9 / w["drops"] for w in ws if w["drops"]]
        return round(median(v), 1) if v else None
    return {
        "window_s": args.window, "windows": len(ws), "flood_restarts": retries, "dropped": sum(w["drops"] for w in ws),
        "drops_per_s": round(median(rates)), "drops_per_s_windows": [round(r) for r in rates],
        "rx_cpu": {k: pct(k) for k in ("softirq", "system", "user", "busy")},
        "softirq_ns_per_drop": ns_per_drop("softirq"),
        "cpu_ns_per_drop": ns_per_drop("softirq", "system"),
        "other_cpus_softirq_pct": {c: round(median([w["others"][c] for w in ws]), 1) for c in ws[0]["others"]},
    }


def choose_source(lab, args, cleanup: Cleanup, progress: Progress) -> str | None:
    """Live frames where the kernel sends them (a short probe), else trafgen,
    with the reason; the veth gets GRO so that frames no XDP program takes
    still reach the stack (a veth without XDP or GRO drops xdp_frames)."""
    if args.source != "live":
        return None
    in_ns(lab, "ethtool", "-K", lab.dut_if, "gro", "on")
    try:
        stop_process(start_live(lab, args.cpu, mac_of(lab.dut, lab.dut_if), cleanup), group=True)
        return None
    except LiveUnsupported as e:
        args.source = "trafgen"
        progress(f"live frames refused, flooding with trafgen instead: {e}")
        return str(e)
