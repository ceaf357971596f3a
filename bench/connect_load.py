#!/usr/bin/env python3
"""bench/connect_load.py - make outbound TCP connects at a steady rate (a helper
of bench/event_capture.py; run it inside a namespace you created).

Each connect is a non-blocking connect() to ADDR:PORT, closed right after it
is sent (the SYN is enough for NetSentinel's monitor to see it). The rate is
kept by catching up every millisecond; rate 0 means as fast as one process
can. Prints one JSON line when done:
  {"pid": 1234, "made": 50000, "errors": 0, "secs": 1.0003, "rate": 49985.0}
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import socket
import sys
import time

EPILOG = """examples:
  ip netns exec nsdut123 .venv/bin/python bench/connect_load.py 10.201.7.2 --rate 10000 --seconds 5
  ip netns exec nsdut123 .venv/bin/python bench/connect_load.py 10.201.7.2 --rate 0 --seconds 2
"""


def run(addr: str, port: int, rate: float, seconds: float) -> dict:
    fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
    made = errors = 0
    t0 = time.monotonic()
    end = t0 + seconds
    while True:
        now = time.monotonic()
        if now >= end:
            break
        due = int((now - t0) * rate) - made if rate else 1000
        if due <= 0:
            time.sleep(0.001)
            continue
        for _ in range(min(due, 1000)):
            s = socket.socket(fam, socket.SOCK_STREAM)
            s.setblocking(False)
            if s.connect_ex((addr, port)) not in (0, errno.EINPROGRESS):   # the normal answer
                errors += 1
            s.close()
            made += 1
    secs = time.monotonic() - t0
    return {"pid": os.getpid(), "made": made, "errors": errors, "secs": round(secs, 4),
            "rate": round(made / secs, 1)}


def main() -> int:
    p = argparse.ArgumentParser(prog="bench/connect_load.py", description=__doc__.split("\n\n")[0],
                                epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("addr")
    p.add_argument("--port", type=int, default=9)
    p.add_argument("--rate", type=float, default=1000, help="connects per second (0: flat out)")
    p.add_argument("--seconds", type=float, default=1.0)
    a = p.parse_args()
    print(json.dumps(run(a.addr, a.port, a.rate, a.seconds)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
