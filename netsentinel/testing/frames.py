"""Hand-built Ethernet frames for lab tests and benches (bench/live_frames.py's
flood, the XDP kernel tests) and a raw sender in a namespace: frames go out
of an AF_PACKET socket exactly as built, source address included."""

from __future__ import annotations

import socket
import struct

INJECT_CODE = """
import socket, sys
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind((sys.argv[1], 0))
frame = bytes.fromhex(sys.argv[2])
for _ in range(int(sys.argv[3])):
    s.send(frame)
"""


def udp_frame(dst_mac: str, src_mac: str, src: str, dst: str) -> bytes:
    """60 bytes, as bench/drop_rate.py's trafgen config: Ethernet, IPv4 (with
    its checksum), UDP 4000 -> 9 (no checksum), 18 zero bytes."""
    payload = bytes(18)
    udp = struct.pack("!HHHH", 4000, 9, 8 + len(payload), 0) + payload
    hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, socket.IPPROTO_UDP, 0,
                      socket.inet_aton(src), socket.inet_aton(dst))
    s = sum(struct.unpack("!10H", hdr))
    s = (s & 0xFFFF) + (s >> 16)
    s = (s & 0xFFFF) + (s >> 16)
    ip = hdr[:10] + struct.pack("!H", ~s & 0xFFFF) + hdr[12:]
    eth = bytes.fromhex(dst_mac.replace(":", "")) + bytes.fromhex(src_mac.replace(":", "")) + b"\x08\x00"
    return eth + ip + udp


def inject(lab, ns: str, ifname: str, frame: bytes, count: int, cpu: int | None = None) -> None:
    """Send `frame` count times out of ifname in namespace ns (pinned to one
    CPU when asked: a veth runs its receive path on the sending CPU)."""
    pin = ["taskset", "-c", str(cpu)] if cpu is not None else []
    r = lab.ns_exec(ns, *pin, "/usr/bin/python3", "-c", INJECT_CODE, ifname, frame.hex(), str(count))
    if r.returncode != 0:
        raise RuntimeError(f"injecting frames in {ns} failed: {r.stderr.strip()[-200:]}")
