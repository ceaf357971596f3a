"""Real inbound traffic for lab tests of the per-source inbound view: a TCP
listener in a namespace that accepts (and optionally talks), and a client
that completes handshakes at a steady rate. Plain sockets in fresh python3
processes: the kernel does the handshakes, nothing is simulated."""

from __future__ import annotations

import subprocess

LISTEN_CODE = r"""
import socket, sys
s = socket.socket(socket.AF_INET6 if ':' in sys.argv[1] else socket.AF_INET)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2])))
s.listen(1024)
print('listening', flush=True)
while True:
    c, _ = s.accept()
    try:
        c.sendall(b'SSH-2.0-lab\r\n')
    except OSError:
        pass
    c.close()
"""

CONNECT_CODE = r"""
import socket, sys, time
addr, port, count, every = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
src = sys.argv[5] if len(sys.argv) > 5 else None
done = 0
start = time.monotonic()
for i in range(count):
    s = socket.socket(socket.AF_INET6 if ':' in addr else socket.AF_INET)
    s.settimeout(3)
    if src:
        s.bind((src, 0))
    try:
        s.connect((addr, port))
        s.recv(64)
        done += 1
    except OSError:
        pass
    s.close()
    time.sleep(max(0.0, start + (i + 1) * every - time.monotonic()))
print(done, flush=True)
"""


def listener(ns: str, addr: str, port: int) -> subprocess.Popen:
    """A TCP listener in namespace ns that greets and closes every client
    (as sshd does with a client that then fails to log in). Waits until it
    listens; the caller terminates it."""
    p = subprocess.Popen(["ip", "netns", "exec", ns, "python3", "-u", "-c", LISTEN_CODE, addr, str(port)],
                         stdout=subprocess.PIPE, text=True)
    if p.stdout.readline().strip() != "listening":
        p.kill()
        raise RuntimeError(f"the lab listener on {addr}:{port} did not start")
    return p


def connector(ns: str, addr: str, port: int, count: int, every_s: float,
              source: str | None = None) -> subprocess.Popen:
    """count connections from namespace ns, one every every_s seconds
    (completed handshakes); prints how many completed when done."""
    return subprocess.Popen(["ip", "netns", "exec", ns, "python3", "-u", "-c", CONNECT_CODE, addr, str(port),
                             str(count), str(every_s), *([source] if source else [])],
                            stdout=subprocess.PIPE, text=True)
