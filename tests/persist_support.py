"""Shared by the enforcement tests (test_kernel_persist.py, test_kernel_pins.py):
a banned peer sending at a fixed rate with the host under test counting what
arrives, a loader starter whose teardown unloads, and bpftool views of pins."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from netlab import LoaderProc, sh, unload_all, validate, wait_until
from netsentinel.abi import ENFORCER_CGROUP, ENFORCER_CONTAIN, ENFORCER_XDP

LINKS = {ENFORCER_XDP, *ENFORCER_CGROUP, *ENFORCER_CONTAIN}

# Counts datagrams; after each one, "<count> <unix time of the first>" into argv[2].
RECEIVER = """
import os, socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", int(sys.argv[1])))
out, n, first = sys.argv[2], 0, None
open(out + ".ready", "w").close()
while True:
    s.recvfrom(64)
    n += 1
    first = first or time.time()
    with open(out + ".tmp", "w") as f:
        f.write(f"{n} {first}")
    os.replace(out + ".tmp", out)
"""

# About 1000 datagrams a second from argv[1]; the running count into argv[4].
SENDER = """
import os, socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], 0))
dst, out, n, due = (sys.argv[2], int(sys.argv[3])), sys.argv[4], 0, time.monotonic()
while True:
    s.sendto(b"banned?", dst)
    n += 1
    if n % 50 == 0:
        with open(out + ".tmp", "w") as f:
            f.write(str(n))
        os.replace(out + ".tmp", out)
    due += 0.001
    time.sleep(max(0.0, due - time.monotonic()))
"""


class Traffic:
    """The banned peer sending, the host under test counting arrivals."""

    def __init__(self, lab, d: Path):
        self.rx, self.tx = d / "received", d / "sent"
        port = str(40000 + lab.n)
        self.procs = [subprocess.Popen(["ip", "netns", "exec", lab.dut, "/usr/bin/python3", "-c",
                                        RECEIVER, port, str(self.rx)])]
        wait_until(lambda: Path(str(self.rx) + ".ready").exists(), 10, what="receiver bound")
        self.procs.append(subprocess.Popen(["ip", "netns", "exec", lab.peer, "/usr/bin/python3", "-c",
                                            SENDER, lab.peer4, lab.dut4, port, str(self.tx)]))

    def sent(self) -> int:
        try:
            return int(self.tx.read_text() or 0)
        except FileNotFoundError:
            return 0

    def received(self) -> tuple[int, float | None]:
        try:
            n, first = self.rx.read_text().split()
            return int(n), float(first)
        except FileNotFoundError:
            return 0, None

    def wait_sent(self, more: int) -> int:
        """Wait until `more` further datagrams have left the peer."""
        target = self.sent() + more
        return wait_until(lambda: self.sent() >= target and self.sent(), 30,
                          what=f"{more} more datagrams sent")

    def alive(self) -> bool:
        return all(p.poll() is None for p in self.procs)

    def stop(self) -> None:
        for p in self.procs:
            p.kill()
            p.wait()


@pytest.fixture
def run(lab, tmp_path):
    """start(*flags) → a started LoaderProc on one records dir; teardown
    stops the sender, every loader, and unloads (leaving nothing)."""
    cfg = tmp_path / "filter_config.json"
    cfg.write_text("{}")
    state = {"loaders": [], "traffic": None}

    def start(*extra, records: Path = tmp_path, interface: str | None = None):
        lp = LoaderProc(lab, records, cfg, *extra, interface=interface)
        state["loaders"].append(lp)
        validate(lp.wait_started())
        return lp

    def traffic():
        state["traffic"] = Traffic(lab, tmp_path)
        return state["traffic"]
    start.traffic = traffic
    yield start
    if state["traffic"]:
        state["traffic"].stop()
    for lp in state["loaders"]:
        if lp.proc.poll() is None:
            lp.stop()
    unload_all(lab)


def pinned_link(lab, name: str) -> dict:
    """{"id", "prog_id", ...} of one pinned link, as bpftool shows it."""
    path = f"{lab.pin_root}/{lab.dut_if}/link_{name}"
    return json.loads(sh("bpftool", "-j", "link", "show", "pinned", path).stdout)


def pinned_map(lab, name: str) -> list:
    out = sh("bpftool", "-j", "map", "dump", "pinned", f"{lab.pin_root}/{lab.dut_if}/{name}").stdout
    return json.loads(out)
