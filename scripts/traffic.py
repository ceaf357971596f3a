#!/usr/bin/env python3
"""traffic.py - traffic generator for trying NetSentinel on a lab host.

Makes outbound TCP connects the monitor reports and the analyzer judges:
  normal  a few connects to common service ports (80, 443, 53, 22)
  high    connects to ports attackers like (23 telnet, 445 SMB, 3389 RDP)
  scan    one process touching many distinct ports of one host (default 1-200)
  --all   normal, high and scan in sequence
  serve   the other side: listen on ports and accept/close connections, so a
          lab host (e.g. in a network namespace) has open ports to find

No internet is needed and neither root nor bcc (only the checkout's
netsentinel/ package, pure Python): point --target at a local
lab host (default 127.0.0.1; IPv6 works). A refused connect is fine: its SYN
is what the monitor sees. Connects use a short timeout (--timeout, 0.5 s).

Output contract:
  per mode, one line on stdout:
    MODE: target=HOST attempted=N open=N refused=N timeout=N error=N elapsed=S
  --json: instead, one JSON object on stdout:
    {"target": HOST, "address": IP, "family": "ipv4"|"ipv6", "timeout_s": T,
     "modes": [{"mode", "ports": [..], "attempted", "open", "refused",
                "timeout", "error", "open_ports": [..], "elapsed_s"}]}
  serve: "listening on ADDR:PORT ..." once every port is bound (flushed), then
    "serve: accepted N connections" at SIGINT/SIGTERM; exit 0.
  exit codes: 0 done; 1 a serve port could not be bound; 2 bad input
    (usage, bad port list, unresolvable target); 141 stdout closed early
    (| head). Errors are one line on stderr (netsentinel/cliargs.py).
"""

from __future__ import annotations

import argparse
import errno
import json
import selectors
import signal
import socket
import sys
import time
from concurrent.futures import ThreadPoolExecutor

from netsentinel.cliargs import (EXIT_FAILURE, EXIT_USAGE, die, quiet_on_closed_stdout,
                                 tool_parser)

PROG = "traffic.py"
MODE_PORTS = {"normal": "80,443,53,22", "high": "23,445,3389", "scan": "1-200"}
OUTCOMES = ("open", "refused", "timeout", "error")

EPILOG = """examples:
  python3 scripts/traffic.py normal                       # against 127.0.0.1
  python3 scripts/traffic.py high --target ::1
  python3 scripts/traffic.py scan --target 10.200.0.2
  python3 scripts/traffic.py scan --target 10.200.0.2 --ports 1-1024 --parallel 16
  python3 scripts/traffic.py --all --target 10.200.0.2 --json

a lab host with open ports, in a network namespace you created:
  sudo ip netns exec lab python3 scripts/traffic.py serve --ports 22,80,443
  python3 scripts/traffic.py serve --ports 8080,8443 --bind 127.0.0.1

--ports takes a list and ranges: 22,80,443 or 1-200 or 1-100,443,8000-8100
"""


def fail(message: str, code: int):
    die(PROG, message, code)


def parse_ports(spec: str) -> list[int]:
    """'22,80,1-5' -> [22, 80, 1, 2, 3, 4, 5] (order kept, duplicates dropped)."""
    ports: list[int] = []
    seen: set[int] = set()
    for part in spec.split(","):
        part = part.strip()
        lo_s, sep, hi_s = part.partition("-")
        try:
            lo = int(lo_s)
            hi = int(hi_s) if sep else lo
        except ValueError:
            raise ValueError(f"bad port list {spec!r}: {part!r} is not a port or a range") from None
        if not (1 <= lo <= 65535 and 1 <= hi <= 65535) or lo > hi:
            raise ValueError(f"bad port list {spec!r}: {part!r} is outside 1-65535 or reversed")
        fresh = [p for p in range(lo, hi + 1) if p not in seen]
        seen.update(fresh)
        ports.extend(fresh)
    return ports


def resolve(target: str) -> tuple[int, str]:
    """(address family, address) of a host name or literal ([::1] accepted)."""
    host = target[1:-1] if target.startswith("[") and target.endswith("]") else target
    try:
        info = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        raise ValueError(f"cannot resolve target {target!r}: {e.strerror}") from None
    family, _, _, _, sockaddr = info[0]
    return family, sockaddr[0]


def connect_once(family: int, address: str, port: int, timeout: float) -> str:
    """One TCP connect; returns one of OUTCOMES."""
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        try:
            s.connect((address, port))
            return "open"
        except ConnectionRefusedError:
            return "refused"
        except (socket.timeout, TimeoutError):
            return "timeout"
        except OSError:
            # Unreachable network/host, or a ban's cgroup block (EPERM).
            return "error"


def run_mode(mode: str, ports: list[int], family: int, address: str, args) -> dict:
    started = time.monotonic()

    def one(port: int) -> str:
        outcome = connect_once(family, address, port, args.timeout)
        if args.delay:
            time.sleep(args.delay)
        return outcome

    with ThreadPoolExecutor(max_workers=args.parallel) as pool:
        outcomes = list(pool.map(one, ports))
    result = {"mode": mode, "ports": ports, "attempted": len(ports)}
    result.update({o: outcomes.count(o) for o in OUTCOMES})
    result["open_ports"] = [p for p, o in zip(ports, outcomes) if o == "open"]
    result["elapsed_s"] = round(time.monotonic() - started, 3)
    return result


def generate(args) -> int:
    modes = ["normal", "high", "scan"] if args.all else [args.mode]
    try:
        family, address = resolve(args.target)
        port_lists = {m: parse_ports(args.ports or MODE_PORTS[m]) for m in modes}
    except ValueError as e:
        fail(str(e), EXIT_USAGE)
    results = []
    for mode in modes:
        r = run_mode(mode, port_lists[mode], family, address, args)
        results.append(r)
        if not args.json:
            counts = " ".join(f"{o}={r[o]}" for o in ("attempted", *OUTCOMES))
            print(f"{mode}: target={args.target} {counts} elapsed={r['elapsed_s']}s", flush=True)
    if args.json:
        fam = "ipv6" if family == socket.AF_INET6 else "ipv4"
        print(json.dumps({"target": args.target, "address": address, "family": fam,
                          "timeout_s": args.timeout, "modes": results}))
    return 0


def listen(bind: str | None, port: int) -> socket.socket:
    """A listening socket; with no --bind, IPv6 dual-stack (falls back to IPv4)."""
    if bind is None:
        try:
            s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            addr: tuple = ("::", port)
        except OSError:
            s, addr = socket.socket(socket.AF_INET, socket.SOCK_STREAM), ("0.0.0.0", port)
    else:
        family, address = resolve(bind)
        s, addr = socket.socket(family, socket.SOCK_STREAM), (address, port)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind(addr)
        s.listen(128)
    except OSError:
        s.close()
        raise
    s.setblocking(False)
    return s


def accept_all(listener: socket.socket) -> int:
    """Accept and close every pending connection; how many there were."""
    n = 0
    while True:
        try:
            conn, _ = listener.accept()
        except (BlockingIOError, InterruptedError):
            return n
        except ConnectionAbortedError:
            continue
        conn.close()
        n += 1


def serve(args) -> int:
    try:
        ports = parse_ports(args.ports) if args.ports else []
        if not ports:
            raise ValueError("serve needs --ports, e.g. --ports 22,80,443")
        if args.bind is not None:
            resolve(args.bind)
    except ValueError as e:
        fail(str(e), EXIT_USAGE)
    sel = selectors.DefaultSelector()
    listening = []
    for port in ports:
        try:
            s = listen(args.bind, port)
        except OSError as e:
            hint = " (ports below 1024 need root)" if e.errno == errno.EACCES else ""
            fail(f"cannot listen on {args.bind or '*'}:{port}: {e.strerror}{hint}", EXIT_FAILURE)
        sel.register(s, selectors.EVENT_READ)
        host = s.getsockname()[0]
        listening.append(f"[{host}]:{port}" if ":" in host else f"{host}:{port}")

    stop = {"now": False}

    def on_signal(signum, frame):
        stop["now"] = True
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    print("listening on " + " ".join(listening), flush=True)

    accepted = 0
    while not stop["now"]:
        # A short select timeout so a signal is noticed promptly.
        for key, _ in sel.select(timeout=0.2):
            accepted += accept_all(key.fileobj)
    for key in list(sel.get_map().values()):
        # Connections already completed in the backlog count too.
        accepted += accept_all(key.fileobj)
        key.fileobj.close()
    print(f"serve: accepted {accepted} connections", flush=True)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = tool_parser(PROG, description="Generate (or receive) test TCP connections.", epilog=EPILOG)
    p.add_argument("mode", nargs="?", choices=["normal", "high", "scan", "serve"],
                   help="what to do (or --all for normal, high and scan)")
    p.add_argument("--all", action="store_true", help="normal, high and scan in sequence")
    p.add_argument("--target", default="127.0.0.1",
                   help="host to connect to (default 127.0.0.1; IPv6 works)")
    p.add_argument("--ports", help="port list/ranges; overrides the mode's ports "
                                   "(scan: 1-200); serve: the ports to listen on")
    p.add_argument("--bind", help="serve: address to listen on (default: all, IPv4 and IPv6)")
    p.add_argument("--timeout", type=float, default=0.5, help="connect timeout, s (default 0.5)")
    p.add_argument("--parallel", type=int, default=1,
                   help="concurrent connects within the one process (default 1)")
    p.add_argument("--delay", type=float, default=0.0, help="pause after each connect, s")
    p.add_argument("--json", action="store_true", help="one JSON summary instead of lines")
    return p


@quiet_on_closed_stdout
def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.all == (args.mode is not None):
        parser.error("give one mode (normal, high, scan, serve) or --all")
    if args.timeout <= 0 or args.parallel < 1 or args.delay < 0:
        parser.error("--timeout must be > 0, --parallel >= 1, --delay >= 0")
    if args.mode == "serve":
        return serve(args)
    return generate(args)


if __name__ == "__main__":
    sys.exit(main())
