#!/usr/bin/env python3
"""bench/live_frames.py - a flood that builds no skb: BPF_PROG_TEST_RUN with
BPF_F_TEST_XDP_LIVE_FRAMES (Linux 5.18+) runs a one-line XDP program that
redirects a prepared 60-byte UDP frame to a veth, over and over; the frames
reach the peer's XDP program as xdp_frames (a helper of bench/drop_rate.py;
run as root inside the namespace that owns the sending interface, pinned to
one CPU, e.g. with taskset).

Why: on a veth, trafgen's frames are skbs before any XDP program sees them,
so every filter pays for the skb and they all look alike. xdp-trafficgen
(xdp-tools) does this same thing but does not load on every kernel.

Protocol: one JSON line on stdout once the first batch went out
  {"ready": true, "ifindex": N, "batch": 64}
then floods until SIGINT/SIGTERM. A kernel that refuses the test run prints
one line on stderr saying why and exits 3.

Also here, for bench/drop_rate.py: the bare XDP_DROP program (the floor
every XDP filter is compared with) and the veth's own XDP counters.
"""

from __future__ import annotations

import argparse
import ctypes
import errno
import json
import os
import platform
import signal
import socket
import sys

from netsentinel.testing.frames import udp_frame  # noqa: F401  (xdp_holder imports it from here)

BPF_PROG_TEST_RUN = 10
BPF_F_TEST_XDP_LIVE_FRAMES = 1 << 1
TEST_XDP_MAX_BATCH = 256
SYS_BPF = {"x86_64": 321, "aarch64": 280}
EXIT_UNSUPPORTED = 3

REDIRECT_SRC = "int ns_live_redirect(struct xdp_md *ctx) { return bpf_redirect(NS_IFINDEX, 0); }"
FLOOR_SRC = "int ns_xdp_floor(struct xdp_md *ctx) { return XDP_DROP; }"
# The floor of any filter that looks at the packet: read the IPv4 source, drop.
READ_FLOOR_SRC = """
#include <uapi/linux/if_ether.h>
#include <uapi/linux/ip.h>
int ns_xdp_read_floor(struct xdp_md *ctx) {
    void *data = (void *)(long)ctx->data, *end = (void *)(long)ctx->data_end;
    struct iphdr *ip = data + sizeof(struct ethhdr);
    if ((void *)(ip + 1) > end)
        return XDP_PASS;
    return ip->saddr ? XDP_DROP : XDP_PASS;
}
"""


class TestAttr(ctypes.Structure):
    """The `test` member of union bpf_attr (include/uapi/linux/bpf.h)."""
    _fields_ = [("prog_fd", ctypes.c_uint32), ("retval", ctypes.c_uint32),
                ("data_size_in", ctypes.c_uint32), ("data_size_out", ctypes.c_uint32),
                ("data_in", ctypes.c_uint64), ("data_out", ctypes.c_uint64),
                ("repeat", ctypes.c_uint32), ("duration", ctypes.c_uint32),
                ("ctx_size_in", ctypes.c_uint32), ("ctx_size_out", ctypes.c_uint32),
                ("ctx_in", ctypes.c_uint64), ("ctx_out", ctypes.c_uint64),
                ("flags", ctypes.c_uint32), ("cpu", ctypes.c_uint32),
                ("batch_size", ctypes.c_uint32), ("_pad", ctypes.c_uint32)]


def test_run(prog_fd: int, frame: bytes, repeat: int, batch: int = 0, live: bool = True) -> int:
    """One BPF_PROG_TEST_RUN: in live-frames mode (the frames go where the
    program sends them), or not (the kernel only times the program: the
    mean ns a run is returned). OSError on refusal or signal (EINTR)."""
    nr = SYS_BPF.get(platform.machine())
    if nr is None:
        raise OSError(errno.ENOSYS, f"bpf syscall number unknown on {platform.machine()}")
    buf = ctypes.create_string_buffer(frame, len(frame))
    out = ctypes.create_string_buffer(len(frame) + 256)   # the frame as the program left it
    attr = TestAttr(prog_fd=prog_fd, data_size_in=len(frame), data_in=ctypes.addressof(buf), repeat=repeat)
    if live:
        attr.flags, attr.batch_size = BPF_F_TEST_XDP_LIVE_FRAMES, batch
    else:
        attr.data_out, attr.data_size_out = ctypes.addressof(out), len(out)
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.syscall(nr, BPF_PROG_TEST_RUN, ctypes.byref(attr), ctypes.sizeof(attr)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return attr.duration


def run_ns(prog_fd: int, frame: bytes, rounds: int = 5, repeat: int = 1_000_000) -> float:
    """The program's own cost on one frame, no flood around it: the median of
    `rounds` test runs of `repeat` runs each (ns a run, the kernel's timing)."""
    v = sorted(test_run(prog_fd, frame, repeat, live=False) for _ in range(rounds))
    return v[len(v) // 2]


def load_xdp(src: str, name: str, cflags: list[str] | None = None):
    """(BPF object, function) compiled by BCC; keep the object alive while the fd is used."""
    from bcc import BPF
    b = BPF(text=src, cflags=cflags or [])
    return b, b.load_func(name, BPF.XDP)


def veth_xdp_stats(netns: str | None, ifname: str) -> dict[str, int]:
    """The veth driver's own counters (ethtool -S), summed over its rx queues:
    xdp_packets, xdp_drops, ... whatever program is attached, or none.
    netns None: the caller's namespace."""
    import subprocess
    cmd = ["ethtool", "-S", ifname]
    out = subprocess.run(["ip", "netns", "exec", netns, *cmd] if netns else cmd,
                         capture_output=True, text=True, check=True, timeout=30).stdout
    totals: dict[str, int] = {}
    for line in out.splitlines():
        key, _, value = line.strip().partition(":")
        if key.startswith("rx_queue_") and value.strip().isdigit():
            name = key.split("_", 3)[3]
            totals[name] = totals.get(name, 0) + int(value)
    return totals


def main() -> int:
    p = argparse.ArgumentParser(prog="bench/live_frames.py", description=__doc__.split("\n\n")[0])
    p.add_argument("-i", "--interface", required=True, help="send out of this interface (a veth)")
    p.add_argument("--dst-mac", required=True)
    p.add_argument("--src", required=True, help="IPv4 source address of every frame")
    p.add_argument("--dst", required=True, help="IPv4 destination address")
    p.add_argument("--batch", type=int, default=64,
                   help=f"frames per kernel batch, at most {TEST_XDP_MAX_BATCH} (default %(default)s)")
    p.add_argument("--chunk", type=int, default=1 << 20, help="frames per test-run call (default %(default)s)")
    args = p.parse_args()

    stop = []
    for s in (signal.SIGINT, signal.SIGTERM):
        signal.signal(s, lambda *_: stop.append(1))
    ifindex = socket.if_nametoindex(args.interface)
    with open(f"/sys/class/net/{args.interface}/address") as f:
        src_mac = f.read().strip()
    frame = udp_frame(args.dst_mac, src_mac, args.src, args.dst)
    _bpf, fn = load_xdp(REDIRECT_SRC, "ns_live_redirect", [f"-DNS_IFINDEX={ifindex}"])
    try:
        test_run(fn.fd, frame, 1, args.batch)
    except OSError as e:
        print(f"live_frames: BPF_PROG_TEST_RUN with XDP live frames refused ({e.strerror}): "
              "needs Linux 5.18+; use --source trafgen", file=sys.stderr)
        return EXIT_UNSUPPORTED
    print(json.dumps({"ready": True, "ifindex": ifindex, "batch": args.batch}), flush=True)
    while not stop:
        try:
            test_run(fn.fd, frame, args.chunk, args.batch)
        except OSError as e:
            if e.errno != errno.EINTR:
                print(f"live_frames: test run failed: {e.strerror}", file=sys.stderr)
                return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
