"""Throwaway network namespaces: a host under test and a peer, joined by veth.

Used by the kernel tests, the benchmarks, the training-data generator and
`make demo`. Two namespaces joined by a veth pair, fixed addresses,
permanent neighbour entries (so bans never race ARP/ND), torn down in
close(). Names carry the creating process's pid so parallel runs on one
machine do not collide. Traffic stays inside these namespaces.

Each lab mounts its own bpffs at /run/netsentinel-lab/<dut> for the loader's
pins (--pin-dir): `ip netns exec` hides the host's /sys/fs/bpf, and a private
one would take the pins with each loader. close() runs `unified_ebpf.py
--unload` for every interface pinned there, then unmounts it.

    dut  (device under test; the loader's XDP sits on its veth)
      v4 10.201.N.1/24   v6 fd00:201:N::1/64   (201: NETSENTINEL_LAB_OCTET)
    peer (the remote host; extra addresses .130 and ::130)
      v4 10.201.N.2/24, 10.201.N.130/24   v6 fd00:201:N::2/64, fd00:201:N::130/64
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import unquote

from ..records import ANALYZER_LOG, LOADER_LOG

ROOT = Path(__file__).resolve().parent.parent.parent
VENV_PY = str(ROOT / ".venv" / "bin" / "python")


def sh(*args: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess:
    r = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({r.returncode}): {r.stderr.strip()}")
    return r


def lab_octet() -> int:
    """Second octet of the lab's addresses: 201 unless NETSENTINEL_LAB_OCTET
    names another (200-250), so two suites on one machine use disjoint
    addresses (cgroup bans are machine-wide)."""
    try:
        o = int(os.environ.get("NETSENTINEL_LAB_OCTET", "201"))
    except ValueError:
        o = 201
    return o if 200 <= o <= 250 else 201


class Lab:
    _seq = 0

    def __init__(self):
        Lab._seq += 1
        n = (os.getpid() * 7 + Lab._seq) % 250 + 1
        tag = f"{os.getpid() % 100000}{Lab._seq}"
        self.n = n
        self.dut, self.peer = f"nsdut{tag}", f"nspeer{tag}"
        self.dut_if, self.peer_if = f"vd{tag}"[:15], f"vp{tag}"[:15]
        o = lab_octet()
        self.dut4, self.peer4, self.peer4b = f"10.{o}.{n}.1", f"10.{o}.{n}.2", f"10.{o}.{n}.130"
        self.dut6, self.peer6, self.peer6b = f"fd00:{o}:{n}::1", f"fd00:{o}:{n}::2", f"fd00:{o}:{n}::130"
        self.pin_root = f"/run/netsentinel-lab/{self.dut}"
        self.closed = False
        try:
            self._build()
        except BaseException:
            self.close()
            raise

    @staticmethod
    def sweep_stale() -> None:
        """A lab whose process was killed before close() leaves its bpffs
        mounted, and the cgroup links pinned there stay attached at the
        machine's cgroup2 root. Unmount (which drops what is pinned) every
        lab bpffs whose namespace is gone, with its namespace twin."""
        base = "/run/netsentinel-lab"
        if not os.path.isdir(base):
            return
        alive = set(sh("ip", "netns", "list", check=False).stdout.split())
        for name in os.listdir(base):
            where = os.path.join(base, name)
            if name in alive or not name.startswith("nsdut"):
                continue
            try:  # a lab being built this moment mounts before it adds its namespace
                if time.time() - os.stat(where).st_ctime < 60:
                    continue
            except OSError:
                continue
            if os.path.ismount(where):
                sh("umount", where, check=False)
            try:
                os.rmdir(where)
            except OSError:
                pass
            sh("ip", "netns", "del", "nspeer" + name[len("nsdut"):], check=False)

    def _build(self) -> None:
        Lab.sweep_stale()
        os.makedirs(self.pin_root, mode=0o700, exist_ok=True)
        sh("mount", "-t", "bpf", "-o", "mode=0700", "bpf", self.pin_root)
        sh("ip", "netns", "add", self.dut)
        sh("ip", "netns", "add", self.peer)
        sh("ip", "link", "add", self.dut_if, "type", "veth", "peer", "name", self.peer_if)
        sh("ip", "link", "set", self.dut_if, "netns", self.dut)
        sh("ip", "link", "set", self.peer_if, "netns", self.peer)
        for ns, ifc, addrs in ((self.dut, self.dut_if, [f"{self.dut4}/24", f"{self.dut6}/64"]),
                               (self.peer, self.peer_if, [f"{self.peer4}/24", f"{self.peer4b}/24",
                                                          f"{self.peer6}/64", f"{self.peer6b}/64"])):
            for a in addrs:
                sh("ip", "-n", ns, "addr", "add", a, "dev", ifc, "nodad")
            sh("ip", "-n", ns, "link", "set", "lo", "up")
            sh("ip", "-n", ns, "link", "set", ifc, "up")
        mac = {ns: json.loads(sh("ip", "-n", ns, "-j", "link", "show", ifc).stdout)[0]["address"]
               for ns, ifc in ((self.dut, self.dut_if), (self.peer, self.peer_if))}
        for a in (self.peer4, self.peer4b, self.peer6, self.peer6b):
            sh("ip", "-n", self.dut, "neigh", "replace", a, "lladdr", mac[self.peer],
               "dev", self.dut_if, "nud", "permanent")
        for a in (self.dut4, self.dut6):
            sh("ip", "-n", self.peer, "neigh", "replace", a, "lladdr", mac[self.dut],
               "dev", self.peer_if, "nud", "permanent")

    def ns_exec(self, ns: str, *args: str, timeout: float = 30, check: bool = False):
        return sh("ip", "netns", "exec", ns, *args, check=check, timeout=timeout)

    def ping(self, src_ns: str, dst: str, *, source: str | None = None, count: int = 1,
             wait: float = 1) -> bool:
        args = ["ping", "-n", "-q", "-c", str(count), "-W", str(wait)]
        if source is None and src_ns == self.peer:
            # The peer has two addresses per family: pin the primary one.
            source = self.peer6 if ":" in dst else self.peer4
        if source:
            args += ["-I", source]
        return self.ns_exec(src_ns, *args, dst, timeout=count * wait + 10).returncode == 0

    def xdp_attached(self) -> bool:
        out = sh("ip", "-n", self.dut, "-j", "-d", "link", "show", self.dut_if).stdout
        link = json.loads(out)[0]
        return "xdp" in link or "prog/xdp" in out

    def pin_dirs(self) -> list[str]:
        """Interfaces with a pin directory (the kernel's own *.debug files aside;
        names are percent-escaped on bpffs, see kernel/pins.py)."""
        return sorted(unquote(n) for n in os.listdir(self.pin_root)
                      if os.path.isdir(os.path.join(self.pin_root, n)))

    def pinned(self) -> list[str]:
        """Everything pinned under the lab's pin root, as interface/object."""
        return sorted(f"{i}/{n}" for i in os.listdir(self.pin_root)
                      if os.path.isdir(os.path.join(self.pin_root, i))
                      for n in (os.listdir(os.path.join(self.pin_root, i)) or [""]))

    def unload(self, interface: str | None = None) -> subprocess.CompletedProcess:
        return sh(VENV_PY, str(ROOT / "unified_ebpf.py"), "--unload", "-i", interface or self.dut_if,
                  "--pin-dir", self.pin_root, check=False, timeout=60)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if os.path.ismount(self.pin_root):
            for ifname in self.pin_dirs():
                r = self.unload(ifname)
                if r.returncode != 0:
                    sys.stderr.write(f"lab: --unload {ifname} failed: {r.stderr.strip()}\n")
        for ns in (self.dut, self.peer):
            sh("ip", "netns", "del", ns, check=False)
        if os.path.ismount(self.pin_root):
            sh("umount", self.pin_root, check=False)   # drops anything still pinned with it
        try:
            os.rmdir(self.pin_root)
        except OSError:
            pass


class LoaderProc:
    """unified_ebpf.py running in a namespace, its events on a queue.
    stderr lines are kept and echoed with a [loader] prefix (echo=False: kept only)."""

    def __init__(self, lab: Lab, records: Path, config: Path, *extra: str, interface: str | None = None,
                 ns: str | None = None, echo: bool = True):
        self.echo = echo
        self.records, self.config = records, config
        cmd = ["ip", "netns", "exec", ns or lab.dut, VENV_PY, "-u", str(ROOT / "unified_ebpf.py"),
               "--records", str(records), "--config", str(config), "--stats-interval", "1"]
        if "--no-xdp" not in extra:
            cmd += ["-i", interface or lab.dut_if]
        if "--pin-dir" not in extra:
            cmd += ["--pin-dir", lab.pin_root]
        cmd += list(extra)
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     cwd=ROOT)
        self.events: queue.Queue = queue.Queue()
        self.all_events: list[dict] = []
        self.stderr_lines: list[str] = []
        threading.Thread(target=self._read_out, daemon=True).start()
        threading.Thread(target=self._read_err, daemon=True).start()

    def _read_out(self) -> None:
        for line in self.proc.stdout:
            ev = json.loads(line)  # a non-JSON line on stdout is itself a failure
            self.all_events.append(ev)
            self.events.put(ev)
        self.events.put(None)

    def _read_err(self) -> None:
        for line in self.proc.stderr:
            self.stderr_lines.append(line.rstrip("\n"))
            if self.echo:
                sys.stderr.write(f"[loader] {line}")

    def wait_for(self, pred, timeout: float = 10.0, what: str = "event") -> dict:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"timed out after {timeout}s waiting for {what}; "
                                     f"stderr: {self.stderr_lines[-5:]}")
            try:
                ev = self.events.get(timeout=left)
            except queue.Empty:
                continue
            if ev is None:
                raise RuntimeError(f"loader exited ({self.proc.wait()}) while waiting for {what}; "
                                     f"stderr: {self.stderr_lines[-8:]}")
            if pred(ev):
                return ev

    def wait_started(self, timeout: float = 90.0) -> dict:
        return self.wait_for(lambda e: e["type"] == "startup", timeout, "startup event")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise RuntimeError(f"loader did not exit within {timeout}s of {signal.Signals(sig).name}")


def read_json(path: Path, default=None):
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return default


def wait_until(pred, timeout: float = 10.0, interval: float = 0.05, what: str = "condition", *,
               not_yet: tuple[type[Exception], ...] = (), each=None, give_up: bool = False):
    """The one poller of tests, bench and demo: call pred() until it returns
    something truthy, and return that.
    not_yet:  exceptions from pred() that mean "not there yet" (a status file
              not written yet, a key it does not have yet);
    each:     called every round, e.g. a progress line, or a check that raises
              to abort the wait;
    give_up:  at the deadline return None (a caller that counts misses)
              instead of raising TimeoutError."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            v = pred()
        except not_yet:
            v = None
        if v:
            return v
        if time.monotonic() >= deadline:
            break
        if each is not None:
            each()
        time.sleep(interval)
    if give_up:
        return None
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")


def start_pipeline(lab: Lab, records: Path, config: Path, analyzer_args: list[str],
                   loader_args: list[str] = ()) -> tuple[subprocess.Popen, subprocess.Popen]:
    """`unified_ebpf.py | llm_analyzer.py` as `make run` starts it, with the
    loader in the lab's host under test; stderr of each goes to
    records/loader.log and records/analyzer.log. Returns (loader, analyzer)."""
    loader = subprocess.Popen(
        ["ip", "netns", "exec", lab.dut, VENV_PY, "-u", str(ROOT / "unified_ebpf.py"), "-i", lab.dut_if,
         "--pin-dir", lab.pin_root, "--records", str(records), "--config", str(config), *loader_args],
        stdout=subprocess.PIPE, stderr=open(records / LOADER_LOG, "w"), cwd=ROOT)
    analyzer = subprocess.Popen(
        [VENV_PY, "-u", str(ROOT / "llm_analyzer.py"), "--records", str(records), "--config", str(config),
         *analyzer_args],
        stdin=loader.stdout, stdout=subprocess.DEVNULL, stderr=open(records / ANALYZER_LOG, "w"), cwd=ROOT)
    loader.stdout.close()   # the analyzer owns the read end now
    return loader, analyzer
