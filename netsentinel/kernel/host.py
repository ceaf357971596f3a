"""Host preparation: kernel filesystems, the cgroup2 root, kprobe support,
importing bcc, and reading a program's source (its -D flags: netsentinel/abi.py)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from ..paths import BPF_DIR
from . import KernelError

# Where the loader mounts its own cgroup2 view when none is visible (for
# example inside `ip netns exec`, which remounts /sys).
PRIVATE_CGROUP2 = Path("/run/netsentinel/cgroup2")

KERNEL_FS = (("tracefs", "/sys/kernel/tracing"), ("debugfs", "/sys/kernel/debug"),
             ("bpf", "/sys/fs/bpf"))


def ensure_kernel_fs() -> list[str]:
    """Mount tracefs/debugfs/bpffs where missing; returns where it mounted.
    BCC finds tracefs when it is imported, and `ip netns exec` gives us a
    fresh /sys without them."""
    mounted = []
    for fstype, where in KERNEL_FS:
        if os.path.isdir(where) and not os.path.ismount(where):
            r = subprocess.run(["mount", "-t", fstype, fstype, where], capture_output=True)
            if r.returncode == 0:
                mounted.append(where)
    return mounted


def import_bcc():
    ensure_kernel_fs()
    try:
        import bcc  # noqa: F401  (Debian's python3-bpfcc, seen through the venv)
    except ImportError as e:
        raise KernelError("the bcc Python module is missing: run `sudo make install` "
                          "(installs Debian's python3-bpfcc) and use .venv/bin/python") from e
    return bcc


def program_source(name: str) -> str:
    return (BPF_DIR / name).read_text()


# ---------------------------------------------------------------- cgroup2 root
def find_cgroup2_root() -> str | None:
    """The first cgroup2 mount this process can see."""
    try:
        with open("/proc/self/mounts") as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 3 and parts[2] == "cgroup2":
                    return parts[1].replace("\\040", " ")
    except OSError:
        return None
    return None


def ensure_cgroup2_root() -> str:
    root = find_cgroup2_root()
    if root:
        return root
    PRIVATE_CGROUP2.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(["mount", "-t", "cgroup2", "none", str(PRIVATE_CGROUP2)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise KernelError(f"no cgroup2 hierarchy is mounted and mounting one at {PRIVATE_CGROUP2} "
                          f"failed: {r.stderr.strip() or r.returncode}")
    return str(PRIVATE_CGROUP2)


def kprobes_unavailable_reason() -> str | None:
    """Why kprobes cannot work on this kernel, or None if they might."""
    pmu = Path("/sys/bus/event_source/devices/kprobe")
    events = [Path("/sys/kernel/tracing/kprobe_events"), Path("/sys/kernel/debug/tracing/kprobe_events")]
    if not pmu.exists() and not any(p.exists() for p in events):
        return "this kernel has no kprobe support (CONFIG_KPROBES is off)"
    return None
