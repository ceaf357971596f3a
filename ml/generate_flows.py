#!/usr/bin/env python3
"""generate_flows.py - make labelled flow data for the flow classifier, for real.

Builds a namespace lab (netsentinel/testing/lab.py), runs the real loader on the host
under test, and plays scenarios from the peer with real tools: hping3 floods
(ICMP, SYN, UDP, SSDP, reflection-port UDP, SYN port scans), and normal
traffic (ping, short TCP exchanges, iperf3 bulk TCP and paced UDP). Each run
uses its own source address so its flow events can be labelled exactly; the
first and last window of a run (partly outside it) are dropped.

USAGE: sudo .venv/bin/python ml/generate_flows.py [--seconds 5] [--out ml/data/flows.jsonl]
Writes one JSON object per flow event: {"label", "scenario", "variant", "run", "seconds", "event"}.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


from netsentinel.testing.lab import ROOT, Lab, LoaderProc, sh  # noqa: E402

TCP_CLIENT = """
import socket, sys, time
src, dst, rate, secs = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
end = time.monotonic() + secs
while time.monotonic() < end:
    try:
        s = socket.create_connection((dst, 8080), timeout=1, source_address=(src, 0))
        s.sendall(b"GET / HTTP/1.0\\r\\n\\r\\n"); s.recv(4096); s.close()
    except OSError:
        pass
    time.sleep(1 / rate)
"""

TCP_SERVER = """
import socket, threading
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("0.0.0.0", 8080)); srv.listen(128)
def serve(c):
    try:
        c.recv(4096); c.sendall(b"HTTP/1.0 200 OK\\r\\n\\r\\n" + b"x" * 2000)
    finally:
        c.close()
while True:
    c, _ = srv.accept(); threading.Thread(target=serve, args=(c,), daemon=True).start()
"""


def scenarios(dst: str, secs: float):
    """(label, scenario, variant, argv builder taking the source address)."""
    h = ["hping3", "-q"]
    for gap in (100, 300, 1000):
        yield "icmp_flood", "hping3 --icmp", f"u{gap}", lambda s, g=gap: h + ["--icmp", "-a", s, "-i", f"u{g}", dst]
        yield "syn_flood", "hping3 -S -p 80", f"u{gap}", lambda s, g=gap: h + ["-S", "-a", s, "-p", "80", "-i", f"u{g}", dst]
        yield "udp_flood", "hping3 --udp -p 53", f"u{gap}", lambda s, g=gap: h + ["--udp", "-a", s, "-p", "53", "-d", "120", "-i", f"u{g}", dst]
        yield "ssdp_flood", "hping3 --udp -p 1900", f"u{gap}", lambda s, g=gap: h + ["--udp", "-a", s, "-p", "1900", "-d", "90", "-i", f"u{g}", dst]
    for sport, gap in ((1900, 200), (123, 500), (53, 1000)):
        yield "reflection", "hping3 --udp -s PORT -k -p ++1024", f"s{sport}", \
            lambda s, p=sport, g=gap: h + ["--udp", "-a", s, "-s", str(p), "-k", "-p", "++1024", "-d", "400", "-i", f"u{g}", dst]
    for gap in (2000, 10000, 30000):
        yield "port_scan", "hping3 -S -p ++1", f"u{gap}", lambda s, g=gap: h + ["-S", "-a", s, "-p", "++1", "-i", f"u{g}", dst]
    for interval in ("0.2", "0.5", "1"):
        yield "normal", "ping", f"i{interval}", lambda s, i=interval: ["ping", "-q", "-I", s, "-i", i, dst]
    for rate in ("3", "15", "40"):
        yield "normal", "tcp requests", f"r{rate}", lambda s, r=rate: [sys.executable, "-c", TCP_CLIENT, s, dst, r, str(secs)]
    for bw in ("5M", "50M", "200M"):
        yield "normal", "iperf3 tcp", bw, lambda s, b=bw: ["iperf3", "-c", dst, "-B", s, "-b", b, "-t", str(int(secs))]
    for bw in ("1M", "4M"):
        yield "normal", "iperf3 udp", bw, lambda s, b=bw: ["iperf3", "-u", "-c", dst, "-B", s, "-b", b, "-t", str(int(secs))]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[1], epilog=__doc__.split("\n\n")[2],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=5.0, help="length of each run (default 5)")
    p.add_argument("--out", default=str(ROOT / "ml" / "data" / "flows.jsonl"))
    p.add_argument("--only", help="run only scenarios with this label (for a quick check)")
    args = p.parse_args(argv)
    if os.geteuid() != 0:
        print("generate_flows: error: needs root (namespaces, XDP)", file=sys.stderr)
        return 1
    lab = Lab()
    procs: list[subprocess.Popen] = []
    lp = None
    rows = []
    try:
        procs.append(subprocess.Popen(["ip", "netns", "exec", lab.dut, sys.executable, "-c", TCP_SERVER]))
        procs.append(subprocess.Popen(["ip", "netns", "exec", lab.dut, "iperf3", "-s"],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        tmp = Path(tempfile.mkdtemp(prefix="ns-flows-"))
        (tmp / "filter_config.json").write_text("{}")
        lp = LoaderProc(lab, tmp, tmp / "filter_config.json", "--flow-interval", "1", "--flow-top", "50",
                        "--flow-pps-threshold", "0", echo=False)
        lp.wait_started()
        todo = [s for s in scenarios(lab.dut4, args.seconds) if not args.only or s[0] == args.only]
        for run, (label, scenario, variant, build) in enumerate(todo):
            src = f"10.201.{lab.n}.{10 + run}"
            sh("ip", "-n", lab.peer, "addr", "add", f"{src}/24", "dev", lab.peer_if, "nodad")
            print(f"[{run + 1}/{len(todo)}] {label:11s} {scenario} {variant} from {src}", file=sys.stderr)
            gen = subprocess.Popen(["ip", "netns", "exec", lab.peer, "timeout", "-s", "INT",
                                    str(args.seconds), *build(src)],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            gen.wait(timeout=args.seconds + 30)
            time.sleep(1.5)  # let the last window close
            events = [e for e in lp.all_events if e["type"] == "flow" and e["src"] == src]
            for ev in events[1:-1]:
                rows.append({"label": label, "scenario": scenario, "variant": variant, "run": run,
                             "seconds": args.seconds, "event": ev})
            print(f"    {max(len(events) - 2, 0)} windows", file=sys.stderr)
    finally:
        if lp is not None:
            lp.stop()
        for pr in procs:
            pr.terminate()
            pr.wait(timeout=10)
        lab.close()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(json.dumps(r, separators=(",", ":")) + "\n" for r in rows))
    print(f"wrote {len(rows)} labelled windows to {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
