"""bench/xdp_refs.py - what bench/drop_rate.py compares NetSentinel's XDP
filter with on the live-frames source: xdp-filter (Debian's xdp-tools), and
the live-frames flood itself (bench/live_frames.py, run in the peer
namespace on one CPU). The bare XDP_DROP floor is held by
bench/xdp_holder.py --program floor."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import tempfile

from common import ROOT, VENV_PY, Cleanup, stop_process
from live_frames import EXIT_UNSUPPORTED, veth_xdp_stats


class Skip(Exception):
    """This method cannot run at this size here; the message says why."""


class LiveUnsupported(Exception):
    """The live-frames source does not work on this kernel; the message says why."""


def start_live(lab, cpu: int, dst_mac: str, cleanup: Cleanup) -> subprocess.Popen:
    """The live-frames sender in the peer namespace, pinned to `cpu`, flooding
    once it has printed its ready line; LiveUnsupported if it never does."""
    proc = subprocess.Popen(
        ["ip", "netns", "exec", lab.peer, "taskset", "-c", str(cpu), VENV_PY,
         str(ROOT / "bench" / "live_frames.py"), "-i", lab.peer_if, "--dst-mac", dst_mac,
         "--src", lab.peer4, "--dst", lab.dut4],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True, cwd=ROOT)
    cleanup.push(stop_process, proc, signal.SIGINT, 10, True)
    if not proc.stdout.readline():
        why = proc.stderr.read().strip().splitlines()
        code = proc.wait()
        if code == EXIT_UNSUPPORTED:
            raise LiveUnsupported(why[-1] if why else f"live_frames.py exited {code}")
        raise RuntimeError(f"live_frames.py exited ({code}) before sending: {why[-1] if why else ''}")
    return proc


def _xdp_filter_run(lab, bpffs: str, *args: str) -> subprocess.CompletedProcess:
    # xdp-filter pins its maps and libxdp its dispatcher in a bpffs. `ip netns
    # exec` remounts /sys, hiding /sys/fs/bpf, and xdp-filter then takes the
    # first bpffs in /proc/mounts, which may be another lab's: so a bpffs of
    # the benchmark's own is bound at /sys/fs/bpf in the command's mount namespace.
    script = 'mount --bind "$0" /sys/fs/bpf && exec xdp-filter "$@"'
    return subprocess.run(["ip", "netns", "exec", lab.dut, "sh", "-c", script, bpffs, *args],
                          capture_output=True, text=True, timeout=60, env={**os.environ, "LIBXDP_BPFFS": bpffs})


def _xdp_filter(lab, bpffs: str, *args: str) -> str:
    r = _xdp_filter_run(lab, bpffs, *args)
    if r.returncode != 0:
        raise RuntimeError(f"xdp-filter {args[0]} failed: {(r.stderr or r.stdout).strip()[-300:]}")
    return r.stdout


def private_bpffs(cleanup: Cleanup) -> str:
    """A bpffs of our own, unmounted and removed at cleanup."""
    where = tempfile.mkdtemp(prefix="nsbench-bpffs-", dir="/run")
    cleanup.push(os.rmdir, where)
    subprocess.run(["mount", "-t", "bpf", "-o", "mode=0700", "bpf", where], check=True, timeout=30)
    cleanup.push(subprocess.run, ["umount", where])
    return where


def _xdp_filter_capacity() -> int | None:
    """max_entries of xdp-filter's IPv4 address map (compiled in: 10,000 in xdp-tools 1.3)."""
    r = subprocess.run(["bpftool", "-j", "map", "show", "name", "filter_ipv4"], capture_output=True,
                       text=True, timeout=30)
    try:
        maps = json.loads(r.stdout or "[]")
    except json.JSONDecodeError:
        return None
    maps = maps if isinstance(maps, list) else [maps]
    return maps[0]["max_entries"] if maps else None


def setup_xdp_filter(lab, banned: str, fillers: list[str], cleanup: Cleanup):
    """xdp-filter in native mode with the banned address (and one address per
    filler /24: it matches exact addresses, in a per-CPU hash) in src mode.
    Its drops are read from the veth's xdp_drops (cheap); its own XDP_DROP
    total from `xdp-filter status`."""
    if not shutil.which("xdp-filter"):
        raise Skip("xdp-filter missing: apt-get install xdp-tools")
    bpffs = private_bpffs(cleanup)
    load = _xdp_filter_run(lab, bpffs, "load", lab.dut_if, "--mode", "native")
    if load.returncode != 0:
        why = (load.stderr or load.stdout).strip().splitlines()
        raise Skip(f"xdp-filter load failed: {why[-1] if why else load.returncode}")

    def teardown():
        _xdp_filter(lab, bpffs, "unload", lab.dut_if)
    try:
        cap = _xdp_filter_capacity()
        if cap is not None and len(fillers) + 1 > cap:
            raise Skip(f"xdp-filter's address map holds at most {cap:,} addresses")
        for p in fillers + [banned]:
            _xdp_filter(lab, bpffs, "ip", p.split("/")[0], "--mode", "src")
    except BaseException:
        teardown()
        raise

    def own() -> int:
        m = re.search(r"XDP_DROP\s+(\d+) pkts", _xdp_filter(lab, bpffs, "status"))
        return int(m.group(1)) if m else 0
    return (lambda: veth_xdp_stats(lab.dut, lab.dut_if).get("xdp_drops", 0)), teardown, {"own": own}
