"""A real CrowdSec Local API (LAPI) for tests: Debian's crowdsec binaries run
alone (`crowdsec -no-cs`: no log acquisition, API only) with a generated
config, SQLite in a temp dir, no online client (Central API disabled), on a
free loopback port; optionally inside a network namespace (the lab's host
under test, whose loader must reach it on its own 127.0.0.1).

The binaries come from the package extracted by scripts/install.sh (step 1)
into /var/cache/netsentinel/crowdsec, or $NETSENTINEL_CROWDSEC_ROOT.

    lapi = Lapi(ns=lab.dut); lapi.start()
    key = lapi.bouncer_key("ns")               # for --crowdsec-key
    lapi.cscli("decisions", "add", "-i", ip, "-d", "1h")
    lapi.kill(); lapi.start()                  # outage and recovery, same db
    lapi.close()
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path

CACHE_ROOT = Path("/var/cache/netsentinel/crowdsec/root")


def binaries_root() -> Path:
    return Path(os.environ.get("NETSENTINEL_CROWDSEC_ROOT") or CACHE_ROOT)


def missing_reason() -> str | None:
    """Why a LAPI cannot run here, or None."""
    root = binaries_root()
    for b in ("crowdsec", "cscli"):
        if not os.access(root / "usr/bin" / b, os.X_OK):
            return f"{root}/usr/bin/{b} is missing (run: sudo make install)"
    return None


FREE_PORT = ("import socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); "
             "print(s.getsockname()[1])")


class Lapi:
    def __init__(self, ns: str | None = None, port: int | None = None):
        self.root = binaries_root()
        self.ns = ns
        self.dir = Path(tempfile.mkdtemp(prefix="netsentinel-lapi-"))
        self.port = port or int(self._run(["/usr/bin/python3", "-c", FREE_PORT]).stdout)
        self.url = f"http://127.0.0.1:{self.port}"
        self.config = self.dir / "config.yaml"
        self.proc: subprocess.Popen | None = None
        self.log: list[str] = []
        self._write_config()

    def _prefix(self) -> list[str]:
        return ["ip", "netns", "exec", self.ns] if self.ns else []

    def _run(self, args: list[str], timeout: float = 30, check: bool = True):
        r = subprocess.run(self._prefix() + args, capture_output=True, text=True, timeout=timeout)
        if check and r.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} failed ({r.returncode}): {r.stderr.strip()[-400:]}")
        return r

    def _write_config(self) -> None:
        d = self.dir
        for sub in ("etc", "data", "hub"):
            (d / sub).mkdir()
        shutil.copy(self.root / "etc/crowdsec/profiles.yaml", d / "etc/profiles.yaml")
        (d / "etc/simulation.yaml").write_text("simulation: false\n")
        (d / "etc/acquis.yaml").write_text("")
        # JSON is YAML: no yaml writer needed.
        self.config.write_text(json.dumps({
            "common": {"daemonize": False, "log_media": "stdout", "log_level": "info",
                       "working_dir": str(d)},
            "config_paths": {"config_dir": f"{d}/etc/", "data_dir": f"{d}/data/",
                             "simulation_path": f"{d}/etc/simulation.yaml", "hub_dir": f"{d}/hub/",
                             "index_path": f"{d}/hub/.index.json",
                             "notification_dir": f"{d}/etc/notifications/",
                             "plugin_dir": f"{d}/plugins/"},
            "crowdsec_service": {"acquisition_path": f"{d}/etc/acquis.yaml"},
            "cscli": {"output": "human"},
            "db_config": {"log_level": "info", "type": "sqlite", "db_path": f"{d}/data/crowdsec.db"},
            "api": {"client": {"insecure_skip_verify": False,
                               "credentials_path": f"{d}/etc/local_api_credentials.yaml"},
                    # No online_client: push and pull to the Central API disabled.
                    "server": {"log_level": "info", "listen_uri": f"127.0.0.1:{self.port}",
                               "profiles_path": f"{d}/etc/profiles.yaml",
                               "trusted_ips": ["127.0.0.1", "::1"]}},
            "prometheus": {"enabled": False},
        }, indent=1))

    # ------------------------------------------------------------ process
    def start(self, timeout: float = 60.0) -> None:
        """Start (or restart, on the same database and port) and wait until it listens."""
        assert self.proc is None or self.proc.poll() is not None, "LAPI already running"
        ready = threading.Event()
        self.proc = subprocess.Popen(
            self._prefix() + [str(self.root / "usr/bin/crowdsec"), "-c", str(self.config), "-no-cs"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)

        def read(proc=self.proc):
            for line in proc.stdout:
                self.log.append(line.rstrip("\n"))
                if "Local API listening on" in line or "CrowdSec Local API listening" in line:
                    ready.set()
            ready.set()
        threading.Thread(target=read, daemon=True).start()
        deadline = time.monotonic() + timeout
        # It logs "listening" just before it binds: wait for a connect to succeed.
        while not (ready.is_set() and self._listening()):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"LAPI did not start within {timeout}s; log: {self.log[-8:]}")
            ready.wait(0.2)
        if not (self.dir / "etc/local_api_credentials.yaml").exists():
            # cscli's own machine, for `decisions add/delete/list`.
            self.cscli("machines", "add", "-a", "-f", str(self.dir / "etc/local_api_credentials.yaml"))

    def kill(self) -> None:
        """An outage: SIGKILL, no goodbye."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def _listening(self) -> bool:
        probe = f"import socket; socket.create_connection(('127.0.0.1', {self.port}), 2).close()"
        return self._run(["/usr/bin/python3", "-c", probe], check=False).returncode == 0

    # ------------------------------------------------------------ cscli
    def cscli(self, *args: str, timeout: float = 30) -> str:
        return self._run([str(self.root / "usr/bin/cscli"), "-c", str(self.config), *args],
                         timeout=timeout).stdout

    def bouncer_key(self, name: str) -> str:
        return self.cscli("bouncers", "add", name, "-o", "raw").strip()

    def machine(self, name: str) -> tuple[str, str]:
        """A validated machine (watcher) login: (machine_id, password)."""
        password = secrets.token_urlsafe(24)
        self.cscli("machines", "add", name, "--password", password, "-f", str(self.dir / f"{name}.yaml"))
        return name, password

    def decisions(self) -> list[dict]:
        """Active decisions as `cscli decisions list -o json` gives them, flattened:
        [{"value", "scope", "type", "origin", "scenario", "id", "duration", "message"}, ...]
        (message: the alert's)."""
        alerts = json.loads(self.cscli("decisions", "list", "-o", "json") or "null") or []
        return [{**d, "message": a.get("message")} for a in alerts for d in (a.get("decisions") or [])]

