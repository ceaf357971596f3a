"""Shared pieces of the NetSentinel benchmarks (bench/*.py).

The namespace lab and the loader process come from netsentinel/testing/lab.py (the
same harness the kernel tests use, re-exported by tests/netlab.py); this
module adds what only benchmarks need: the --quick/--plot command line,
cleanup that also runs on SIGTERM, per-CPU and per-process CPU accounting
from /proc, a description of the machine, entering a namespace from one
thread, the synthetic ban prefixes, and the output contract:

    stdout: exactly one JSON line  {"bench": NAME, "v": 1, "quick": bool,
            "machine": {...}, "params": {...}, "results": [...], ...}
    stderr: progress lines ("[bench NAME +12.3s] ...") and a short table.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

from netsentinel.testing.lab import VENV_PY, Lab, LoaderProc, sh, wait_until  # noqa: E402,F401

IMG_DIR = ROOT / "docs" / "img"
RESULT_VERSION = 1


# ------------------------------------------------------------------ command line
def parser(name: str, doc: str, epilog: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=f"bench/{name}.py", description=doc.split("\n\n")[0],
                                epilog=epilog, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="tiny size (CI: proves it works, says nothing about speed)")
    p.add_argument("--plot", metavar="PNG", help="also draw the result as a PNG (matplotlib)")
    return p


def loader_arg_option(p: argparse.ArgumentParser) -> None:
    """--loader-arg: compare loader settings side by side in one run."""
    p.add_argument("--loader-arg", action="append", default=[], metavar="ARG",
                   help="pass ARG to the loader (repeat; e.g. --loader-arg=--priority-boost=0)")


def need_root(name: str) -> None:
    if os.geteuid() != 0:
        print(f"bench/{name}.py: error: needs root (network namespaces, BPF); try sudo",
              file=sys.stderr)
        sys.exit(2)


class Progress:
    def __init__(self, name: str):
        self.name, self.t0 = name, time.monotonic()

    def __call__(self, msg: str) -> None:
        print(f"[bench {self.name} +{time.monotonic() - self.t0:.1f}s] {msg}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------ cleanup
class Cleanup:
    """LIFO cleanup callbacks that also run when SIGTERM/SIGINT/SIGHUP arrive:
    the signal becomes SystemExit so every `finally` in the benchmark runs."""

    def __init__(self):
        self._fns: list = []
        for s in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(s, self._raise)
        signal.signal(signal.SIGINT, self._raise)

    @staticmethod
    def _raise(signum, _frame):
        raise SystemExit(128 + signum)

    def push(self, fn, *args):
        self._fns.append((fn, args))
        return fn

    def run(self) -> None:
        # Hold off a second signal while tearing down.
        old = signal.pthread_sigmask(signal.SIG_BLOCK, (signal.SIGTERM, signal.SIGINT, signal.SIGHUP))
        try:
            while self._fns:
                fn, args = self._fns.pop()
                try:
                    fn(*args)
                except Exception as e:  # keep cleaning the rest
                    print(f"cleanup: {getattr(fn, '__name__', fn)}: {e}", file=sys.stderr)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)


def stop_process(proc: subprocess.Popen, sig: int = signal.SIGINT, timeout: float = 10,
                 group: bool = False) -> None:
    """Stop one process we started, by its pid; group=True: its whole process
    group (start it with start_new_session=True), for tools such as trafgen
    whose forked workers outlive a parent that alone was signalled."""
    def send(s):
        try:
            os.killpg(proc.pid, s) if group else proc.send_signal(s)
        except ProcessLookupError:
            pass
    if proc.poll() is None:  # once reaped, its pid (and group id) may be someone else's
        send(sig)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            send(signal.SIGKILL)
            proc.wait()


def scratch_dir(cleanup: Cleanup) -> Path:
    """A temporary directory removed at cleanup, after everything pushed later
    (a loader writing its last status there) has stopped."""
    d = Path(tempfile.mkdtemp(prefix="nsbench-"))
    cleanup.push(shutil.rmtree, d, True)
    return d


# ------------------------------------------------------------------ CPU accounting
USER_HZ = os.sysconf("SC_CLK_TCK")
CPU_FIELDS = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")


def cpu_times() -> dict[int, dict[str, int]]:
    """/proc/stat per-CPU jiffies: {cpu: {field: ticks}}."""
    out = {}
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith("cpu") and line[3].isdigit():
                parts = line.split()
                out[int(parts[0][3:])] = dict(zip(CPU_FIELDS, map(int, parts[1:9])))
    return out


def cpu_delta(before: dict, after: dict, cpu: int) -> dict[str, float]:
    """Seconds spent per category on one CPU between two cpu_times()."""
    d = {k: (after[cpu][k] - before[cpu][k]) / USER_HZ for k in CPU_FIELDS}
    d["busy"] = sum(v for k, v in d.items() if k not in ("idle", "iowait"))
    return d


def process_cpu_seconds(pid: int) -> float:
    """utime + stime of one process (all its threads), in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / USER_HZ


# ------------------------------------------------------------------ namespaces
_libc = ctypes.CDLL(None, use_errno=True)
CLONE_NEWNET = 0x40000000


def enter_netns(name: str) -> None:
    """Move the calling thread (only) into network namespace `name`; sockets it
    creates afterwards live there. Other threads keep their namespace."""
    fd = os.open(f"/run/netns/{name}", os.O_RDONLY | os.O_CLOEXEC)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns({name}): {os.strerror(err)}")
    finally:
        os.close(fd)


def netns_clean(lab: Lab) -> bool:
    """True when neither of the lab's namespaces is listed any more."""
    listed = sh("ip", "netns", "list", check=False).stdout
    return not any(line.split()[0] in (lab.dut, lab.peer) for line in listed.splitlines() if line.strip())


@contextmanager
def lab_session(cleanup: Cleanup, progress: Progress):
    """A Lab torn down (and checked gone) on every exit path."""
    lab = Lab()
    progress(f"lab up: {lab.dut} ({lab.dut4}) <-> {lab.peer} ({lab.peer4}) via {lab.dut_if}/{lab.peer_if}")

    def close():
        lab.close()
        if not netns_clean(lab):
            print(f"warning: namespaces {lab.dut}/{lab.peer} still listed", file=sys.stderr)
    cleanup.push(close)
    yield lab


# ------------------------------------------------------------------ ban prefixes
def filler_prefixes(n: int) -> list[str]:
    """n distinct /24 networks from 11.0.0.0 upwards: map and rule-set filler
    that never matches the lab's 10.201.x.x traffic (at most ~3.9M)."""
    base = 11 << 24
    return [f"{(a >> 24) & 255}.{(a >> 16) & 255}.{(a >> 8) & 255}.0/24"
            for a in (base + (i << 8) for i in range(n))]


# ------------------------------------------------------------------ machine
def _first_line(*cmd: str) -> str | None:
    try:
        r = subprocess.run(list(cmd), capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return (r.stdout or r.stderr).strip().splitlines()[0] if (r.stdout or r.stderr).strip() else None


def machine() -> dict:
    model = None
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as f:
        mem_kb = int(f.readline().split()[1])
    try:
        import bcc
        bcc_version = getattr(bcc, "__version__", None)
    except ImportError:
        bcc_version = None
    return {
        "kernel": platform.release(), "cpu": model, "cpus": os.cpu_count(),
        "mem_gib": round(mem_kb / 1048576, 1), "python": platform.python_version(),
        "bcc": bcc_version, "os": _os_name(),
    }


def _os_name() -> str | None:
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip('"')
    except OSError:
        pass
    return None


def tool_version(*cmd: str) -> str | None:
    return _first_line(*cmd)


# ------------------------------------------------------------------ output
def table(headers: list[str], rows: list[list]) -> str:
    cells = [[h for h in headers]] + [["" if v is None else (f"{v:,.2f}" if isinstance(v, float) else str(v))
                                       for v in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.rjust(w) if j else c.ljust(w) for j, (c, w) in enumerate(zip(r, widths)))
             for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def emit(name: str, quick: bool, params: dict, results: list[dict], started: float,
         headers: list[str], rows: list[list], **extra) -> dict:
    """The one JSON line on stdout, the human table on stderr."""
    out = {"bench": name, "v": RESULT_VERSION, "quick": quick,
           "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
           "duration_s": round(time.time() - started, 1), "machine": machine(),
           "params": params, "results": results, **extra}
    print(f"\n{name}:\n{table(headers, rows)}\n", file=sys.stderr, flush=True)
    print(json.dumps(out, sort_keys=False), flush=True)
    return out


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100); None for no values."""
    if not values:
        return None
    s = sorted(values)
    k = max(0, min(len(s) - 1, int(round(q / 100 * len(s) + 0.5)) - 1))
    return s[k]


def pyplot():
    """matplotlib without a display."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def style_axes(ax, xlabel: str, ylabel: str, title: str, log_x: bool = True) -> None:
    if log_x:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)


def save_figure(fig, path: str) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
