#!/usr/bin/env python3
"""demo.py - the whole system on one machine, no internet (`sudo make demo`).

Builds throwaway network namespaces as a small "internet": the host under
test (where the loader's XDP sits), an ordinary service host and a malicious
host. Runs the real loader | analyzer pipeline (rules backend unless an LLM is
configured) and the dashboard against a records directory of its own, then
plays a script: normal connections, connections to suspicious ports, a port
scan, a ban approved from review, the ban taking effect (connect() failing at
once, packets dropped), and an inbound ICMP flood. Everything is cleaned up on
exit, Ctrl-C or SIGTERM: no namespace, veth or XDP program is left behind.

USAGE: sudo .venv/bin/python scripts/demo.py [--no-dashboard] [--no-wait] [--approve-after 20]
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path


from netsentinel import threats
from netsentinel.cliargs import EXIT_FAILURE, die, tool_parser
from netsentinel.testing.lab import (ROOT, VENV_PY, Lab, lab_octet, read_json, sh,
                                     start_pipeline, wait_until)
from netsentinel.records import (BANNED_IPS, DASHBOARD_LOG, DASHBOARD_LOGS, FILTER_RULES, LOADER_LOG,
                                 LOADER_STATUS)
from netsentinel.store import RecordsStore

SERVER = """
import socket, sys, threading
def serve(port):
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((sys.argv[1], port)); s.listen(64)
    while True:
        c, _ = s.accept(); c.close()
for p in map(int, sys.argv[2].split(",")):
    threading.Thread(target=serve, args=(p,), daemon=True).start()
threading.Event().wait()
"""

# A process inside the host under test connecting out: argv = dst ports... ; prints errnos.
CLIENT = """
import json, socket, sys, time
out = {}
for port in map(int, sys.argv[2].split(",")):
    s = socket.socket(); s.settimeout(0.5); t = time.monotonic()
    out[port] = [s.connect_ex((sys.argv[1], port)), round((time.monotonic() - t) * 1000, 1)]
    s.close()
print(json.dumps(out))
"""


PROG = "demo.py"
SPINNER = "|/-\\"


class Demo:
    def __init__(self, args):
        self.args = args
        self.tty = sys.stdout.isatty()
        self.lab: Lab | None = None
        self.procs: list[subprocess.Popen] = []
        self.records = Path(tempfile.mkdtemp(prefix="netsentinel-demo-"))
        self.store = RecordsStore(self.records)
        self.step_no = 0
        self.results: dict = {}
        self.t0 = time.monotonic()

    # ------------------------------------------------------------- display
    def step(self, text: str) -> None:
        self.step_no += 1
        print(f"\n[{self.step_no}/9] {text}", flush=True)

    def say(self, text: str) -> None:
        print(f"      {text}", flush=True)

    def wait(self, what: str, pred, timeout: float):
        """wait_until with a live progress line; returns pred's value, or None
        (said on screen) at the deadline: the demo goes on and reports it."""
        rounds = [0]

        def progress() -> None:
            if not self.tty:
                return
            s = (read_json(self.records / LOADER_STATUS, {}) or {}).get("stats", {})
            print(f"\r      {SPINNER[rounds[0] % 4]} {what}: {s.get('events', 0)} events, "
                  f"{s.get('bans_active', 0)} bans, {s.get('drops_total', 0)} drops ",
                  end="", flush=True)
            rounds[0] += 1

        v = wait_until(pred, timeout, 0.2, what, each=progress, give_up=True)
        if rounds[0] and self.tty:
            print("\r" + " " * 78 + "\r", end="")
        if not v:
            self.say(f"! gave up waiting for {what} after {timeout:.0f}s")
        return v

    # ------------------------------------------------------------- pieces
    def start(self) -> None:
        self.step("Lab: host under test, a service host and a malicious host (network namespaces)")
        self.lab = lab = Lab()
        self.results["namespaces"] = [lab.dut, lab.peer]
        self.flooder = f"10.{lab_octet()}.{lab.n}.66"
        sh("ip", "-n", lab.peer, "addr", "add", f"{self.flooder}/24", "dev", lab.peer_if, "nodad")
        self.say(f"host under test {lab.dut4} ({lab.dut}); service host {lab.peer4}; "
                 f"malicious host {lab.peer4b}; flood source {self.flooder}")
        self.procs.append(subprocess.Popen(["ip", "netns", "exec", lab.peer, sys.executable, "-c", SERVER,
                                            lab.peer4, "22,80,443"]))
        self.procs.append(subprocess.Popen(["ip", "netns", "exec", lab.peer, sys.executable, "-c", SERVER,
                                            lab.peer4b, "80"]))
        (self.records / "filter_config.json").write_text("{}")

        self.step("Pipeline: unified_ebpf.py | llm_analyzer.py" +
                  ("" if self.args.no_dashboard else " + dashboard"))
        cfg = str(self.records / "filter_config.json")
        loader, analyzer = start_pipeline(lab, self.records, Path(cfg), self.args.analyzer_args.split(),
                                          ["--stats-interval", "2"])
        self.procs += [loader, analyzer]
        self.loader = loader
        if not self.args.no_dashboard and (ROOT / "dashboard.py").exists():
            token = secrets.token_urlsafe(32)  # the dashboard asks for it (docs/DASHBOARD.md)
            env = dict(os.environ, NETSENTINEL_RECORDS=str(self.records), NETSENTINEL_CONFIG=cfg,
                       NETSENTINEL_DASHBOARD_TOKEN=token)
            self.procs.append(subprocess.Popen(
                [VENV_PY, "-m", "streamlit", "run", str(ROOT / "dashboard.py"), "--server.address",
                 "127.0.0.1", "--server.port", str(self.args.port), "--server.headless", "true",
                 "--browser.gatherUsageStats", "false"],
                env=env, stdout=open(self.records / DASHBOARD_LOG, "w"), stderr=subprocess.STDOUT,
                cwd=ROOT))
            self.say(f"dashboard: http://127.0.0.1:{self.args.port}/?token={token}")
        ok = self.wait("loader start", lambda: (read_json(self.records / LOADER_STATUS) or {})
                       .get("running"), 90)
        if not ok:
            raise RuntimeError(f"the loader did not start; see {self.records / LOADER_LOG}")
        st = read_json(self.records / LOADER_STATUS)
        self.say(f"capture: {st['capture_mode']}, XDP: {st['xdp_mode']}, "
                 f"cgroup block: {st['cgroup_block']}; records in {self.records}")

    def client(self, host: str, ports: str) -> dict:
        r = self.lab.ns_exec(self.lab.dut, sys.executable, "-c", CLIENT, host, ports, timeout=120)
        return json.loads(r.stdout)

    def traffic(self, mode: str, host: str, *extra: str) -> dict:
        """traffic.py run inside the host under test (a real process
        the monitor sees), with its JSON summary."""
        r = self.lab.ns_exec(self.lab.dut, sys.executable, str(ROOT / "scripts" / "traffic.py"), mode,
                             "--target", host, "--json", *extra, timeout=120)
        if r.returncode != 0:
            raise RuntimeError(f"traffic.py {mode}: {r.stderr.strip()}")
        return json.loads(r.stdout)

    def logs(self) -> list:
        return (read_json(self.records / DASHBOARD_LOGS) or {}).get("entries", [])

    def pending(self, category: str | None = None) -> list:
        return [t for t in threats.list_threats(self.store, "pending")
                if category is None or t.get("category") == category]

    def play(self) -> None:
        """Steps 3-9, one method each (steps 1-2 are start())."""
        self.normal_traffic()
        self.suspicious_ports()
        scan = self.port_scan()
        target = self.approve(scan)
        self.ban_takes_effect(target)
        self.inbound_flood()
        self.step("Done")
        self.results["seconds"] = round(time.monotonic() - self.t0, 1)
        self.say(f"records: {self.records}")

    def normal_traffic(self) -> None:
        lab = self.lab
        self.step(f"Normal connections from the host to the service host ({lab.peer4}: 22, 80, 443)")
        out = self.traffic("normal", lab.peer4, "--ports", "22,80,443")
        m = out["modes"][0]
        self.say(f"traffic.py normal: {m['attempted']} connects, {m['open']} open, "
                 f"{m['refused']} refused")
        n = self.wait("analysed events", lambda: len([e for e in self.logs()
                                                      if e["event"].get("daddr") == lab.peer4]) >= 3, 15)
        self.say(f"analysed: {n and 'INFO for all three' or 'not seen'}")

    def suspicious_ports(self) -> None:
        lab = self.lab
        self.step(f"Suspicious ports on the malicious host ({lab.peer4b}: 23, 445, 3389)")
        self.traffic("high", lab.peer4b)
        high = self.wait("HIGH threats", lambda: [t for t in self.pending() if t["level"] == "HIGH"], 15)
        for t in high or []:
            self.say(f"pending review: {t['level']} {t['category']} -> {t.get('target')}:"
                     f"{t['event'].get('dport')} ({t['reason'][:60]})")

    def port_scan(self) -> dict:
        self.step("A port scan of the malicious host (ports 1-200): traffic.py scan")
        self.traffic("scan", self.lab.peer4b)
        # By category: the host's raw sockets (hping3 below, other tools) are threats too.
        crit = self.wait("a CRITICAL scan threat", lambda: [t for t in self.pending("port_scan")
                                                            if t["level"] == "CRITICAL"], 20)
        if not crit:
            raise RuntimeError("the port scan did not become a CRITICAL threat")
        scan = crit[0]
        self.say(f"pending review: CRITICAL {scan['category']} of {scan.get('target')} "
                 f"(seen {scan['count']}x): {scan['reason'][:70]}")
        self.results["scan_threat"] = scan["id"]
        return scan

    def approve(self, scan: dict) -> str:
        """A person's decision in the dashboard, else the demo's own; the
        banned address."""
        self.step("Review: the ban is approved")
        decided = None
        if not self.args.no_dashboard and self.args.approve_after > 0:
            self.say(f"open http://127.0.0.1:{self.args.port}, Review, and click Approve "
                     f"(the demo approves by itself after {self.args.approve_after}s)")
            decided = self.wait("your decision", lambda: next(
                (t for t in threats.list_threats(self.store) if t["id"] == scan["id"]
                 and t["status"] != "pending"), None), self.args.approve_after)
        t_click = time.monotonic()
        if decided is None:
            decided = threats.approve(self.store, scan["id"], by="demo", note="approved by make demo")
        self.say(f"{decided['status']} by {decided['decided_by']}: ban command for {decided.get('target')}")
        target = decided.get("target") or self.lab.peer4b
        banned = self.wait("the ban in the kernel",
                           lambda: target in (read_json(self.records / BANNED_IPS) or {}), 10)
        self.results["approve_to_ban_ms"] = round((time.monotonic() - t_click) * 1000)
        self.say(f"banned {target} {self.results['approve_to_ban_ms']} ms after approval"
                 if banned else "! the ban did not reach the kernel")
        return target

    def ban_takes_effect(self, target: str) -> None:
        lab = self.lab
        self.step("The ban takes effect")
        err, ms = self.client(target, "80")["80"]
        self.say(f"connect() to {target}:80 -> {os.strerror(err) if err else 'connected?!'} in {ms} ms")
        self.results["blocked_connect"] = {"errno": err, "ms": ms}
        r = lab.ns_exec(lab.peer, "ping", "-c", "3", "-i", "0.2", "-W", "1", "-q", "-I", target, lab.dut4)
        self.say(f"ping from {target} to the host: {'dropped at XDP' if r.returncode else 'got through?!'}")
        drops = self.wait("the drop counter", lambda: (read_json(self.records / BANNED_IPS) or {})
                          .get(target, {}).get("drops", 0), 6)
        self.say(f"banned_ips.json: {drops or 0} packets dropped from {target}")
        self.results["drops"] = drops or 0

    def flood_threat(self) -> dict | None:
        return next((t for t in threats.list_threats(self.store) if t.get("target") == self.flooder), None)

    def inbound_flood(self) -> None:
        lab = self.lab
        self.step(f"An inbound ICMP flood from {self.flooder} (hping3, 5 s)")
        if not shutil.which("hping3"):
            self.say("hping3 is not installed (sudo make install); skipped")
            return
        before = len(self.pending())
        flood = subprocess.Popen(["ip", "netns", "exec", lab.peer, "timeout", "-s", "INT", "5", "hping3",
                                  "-q", "--icmp", "-i", "u500", "-a", self.flooder, lab.dut4],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        t0 = time.monotonic()
        first = self.wait("flood detection", self.flood_threat, 8)
        if first:
            self.say(f"detected {time.monotonic() - t0:.1f}s after the flood started: "
                     f"{first['level']} {first['category']}")
        # The first window may be partial (HIGH); a full one is CRITICAL. Its
        # source never completed a handshake, so its address may be spoofed:
        # it is rate-limited on its own rather than banned (analyzer/autoban.py).
        rid = f"src-icmp-{self.flooder}"

        def limit() -> dict | None:
            return next((r for r in (read_json(self.records / FILTER_RULES) or {}).get("rules", [])
                         if r.get("id") == rid and r.get("hits", 0) > 0), None)
        done = self.wait("the automatic response", lambda: limit() or (
            (self.flood_threat() or {}).get("status") == "approved" and self.flood_threat()), 8)
        flood.wait(timeout=20)
        t = self.flood_threat()
        if not t:
            self.say(f"the analyzer raised no flood threat ({len(self.pending()) - before} new "
                     "threats); flow events are in the loader's stream")
            return
        self.say(f"{t['level']} {t['category']}: {t['reason'][:70]}")
        ban = (read_json(self.records / BANNED_IPS) or {}).get(self.flooder, {})
        rule = limit() or {}
        if ban:
            response, drops = "ban", ban.get("drops", 0)
            self.say(f"{t['status']} by {t['decided_by']}; {drops} flood packets dropped at XDP, "
                     f"ban expires {ban.get('expires_at')}")
        else:
            response, drops = ("ratelimit" if rule else "none"), rule.get("hits", 0)
            self.say(f"not banned (its address may be spoofed): rate-limited to {rule.get('rate_pps')} "
                     f"packets/s by rule {rid}, {drops} flood packets dropped at XDP" if rule else
                     f"no automatic response yet ({'found' if done else 'waited 8 s'})")
        self.results["flood"] = {"level": t["level"], "status": t["status"], "response": response,
                                 "drops": drops}

    def cleanup(self) -> None:
        for p in reversed(self.procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
        if self.lab:
            self.lab.close()
        left = sh("ip", "netns", "list", check=False).stdout
        mine = [n for n in (self.lab.dut, self.lab.peer) if n in left] if self.lab else []
        print(f"\ncleaned up: namespaces removed{' (NOT: ' + ', '.join(mine) + ')' if mine else ''}, "
              "enforcement unloaded (unified_ebpf.py --unload)", flush=True)


def main(argv=None) -> int:
    p = tool_parser(PROG, description=__doc__.split("\n\n")[1],
                    epilog="examples:\n  sudo make demo\n"
                           "  sudo .venv/bin/python scripts/demo.py --no-dashboard --no-wait\n"
                           "  sudo .venv/bin/python scripts/demo.py --analyzer-args '--backend ollama'")
    p.add_argument("--no-dashboard", action="store_true", help="do not start the dashboard")
    p.add_argument("--no-wait", action="store_true", help="exit when the script ends (default: "
                   "keep the lab up for the dashboard until Ctrl-C)")
    p.add_argument("--approve-after", type=float, default=20.0,
                   help="seconds to wait for a person to approve in the dashboard (default 20)")
    p.add_argument("--port", type=int, default=8501, help="dashboard port (default 8501)")
    p.add_argument("--analyzer-args", default="--backend rules --scan-ports 15",
                   help="extra llm_analyzer.py flags (default: %(default)s)")
    p.add_argument("--json", action="store_true", help="print a JSON summary line at the end")
    args = p.parse_args(argv)
    if os.geteuid() != 0:
        die(PROG, "needs root (try: sudo make demo)", EXIT_FAILURE)
    demo = Demo(args)

    def stop(signum, _frame):
        raise KeyboardInterrupt
    # Installed explicitly: a shell that starts us in the background hands
    # us SIGINT ignored, and Ctrl-C / SIGTERM must always clean up.
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    code = 0
    try:
        demo.start()
        demo.play()
        if not args.no_wait:
            print("\nThe lab stays up for the dashboard; Ctrl-C to clean up.", flush=True)
            while True:
                time.sleep(3600)
    except KeyboardInterrupt:
        print("\ninterrupted", flush=True)
    except (RuntimeError, socket.error, subprocess.SubprocessError) as e:
        print(f"\n{PROG}: error: {e}", file=sys.stderr, flush=True)
        code = EXIT_FAILURE
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        demo.cleanup()
    if args.json:
        print(json.dumps(demo.results))
    return code


if __name__ == "__main__":
    sys.exit(main())
