"""Test harness for the kernel tests: the namespace lab and loader process
(netsentinel/testing/lab.py, re-exported here), fixtures and small helpers.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from netsentinel.testing.lab import (ROOT, VENV_PY, Lab, LoaderProc, read_json, sh,  # noqa: F401
                             wait_until)



def kernel_test_skip_reason() -> str | None:
    """Why kernel tests cannot run here at all, or None."""
    if os.geteuid() != 0:
        return "kernel tests need root (run: sudo make test)"
    if not shutil.which("ip"):
        return "iproute2 (ip) is not installed (run: sudo make install)"
    try:
        import bcc  # noqa: F401
    except ImportError:
        return "the bcc module is missing (run: sudo make install)"
    return None


@pytest.fixture(scope="module")
def lab():
    """One Lab per test module (modules that import this fixture)."""
    lab = Lab()
    yield lab
    lab.close()


def start_loader(lab: Lab, tmp_path_factory, *extra: str) -> "LoaderProc":
    """A loader with fresh records/ and an empty whitelist, started and checked."""
    d = tmp_path_factory.mktemp("records")
    cfg = d / "filter_config.json"
    cfg.write_text("{}")
    lp = LoaderProc(lab, d, cfg, *extra)
    validate(lp.wait_started())
    return lp


def stop_loader(lab: Lab, lp: "LoaderProc") -> None:
    """SIGTERM ends monitoring, not enforcement; --unload then removes it all."""
    assert lp.stop() == 0
    assert lab.xdp_attached(), "SIGTERM took the XDP program away: enforcement must outlive the loader"
    unload_all(lab)


def unload_all(lab: Lab) -> None:
    """`unified_ebpf.py --unload` for every interface pinned in the lab; then
    nothing of ours is attached or pinned."""
    for ifname in lab.pin_dirs():
        r = lab.unload(ifname)
        assert r.returncode == 0, r.stderr
    assert not lab.xdp_attached(), "XDP program left on the interface after --unload"
    assert lab.pinned() == [], f"pins left after --unload: {lab.pinned()}"


class LoaderStarter:
    """`with LoaderStarter(lab, records, config) as start:` start(*flags)
    starts a checked loader; on leaving, each still running is stopped and
    nothing may stay attached."""

    def __init__(self, lab: Lab, records: Path, config: Path):
        self.lab, self.records, self.config = lab, records, config
        self.started: list[LoaderProc] = []

    def __call__(self, *extra: str, **kw) -> LoaderProc:
        lp = LoaderProc(self.lab, self.records, self.config, *extra, **kw)
        self.started.append(lp)
        validate(lp.wait_started())
        return lp

    def __enter__(self) -> "LoaderStarter":
        return self

    def __exit__(self, *exc) -> None:
        for lp in self.started:
            if lp.proc.poll() is None:
                lp.stop()
        unload_all(self.lab)  # a stopped loader leaves enforcement pinned; --unload removes it


def write_commands(records: Path, commands) -> None:
    """Write ban_commands.json the way a person does: plain text, in place."""
    (records / "ban_commands.json").write_text(json.dumps(commands) + "\n")


_SCHEMA = None


def validate(ev: dict) -> dict:
    """Check an event against docs/events.schema.json; returns it."""
    global _SCHEMA
    import jsonschema
    from netsentinel.events import load_schema
    if _SCHEMA is None:
        _SCHEMA = load_schema()
    jsonschema.validate(ev, _SCHEMA)
    return ev


def ban_event(lp, ip, type_="ban", result=None, timeout=5.0):
    return validate(lp.wait_for(
        lambda e: e["type"] == type_ and e.get("ip") == ip and (result is None or e["result"] == result),
        timeout, f"{type_} {ip}"))


CONNECT_CODE = """
import json, socket, sys, time
fam = socket.AF_INET6 if ':' in sys.argv[1] else socket.AF_INET
s = socket.socket(fam, socket.SOCK_DGRAM if sys.argv[3] == 'udp' else socket.SOCK_STREAM)
s.settimeout(3); t = time.monotonic()
try:
    if sys.argv[3] == 'udp': s.sendto(b'x', (sys.argv[1], int(sys.argv[2]))); err = 0
    else: s.connect((sys.argv[1], int(sys.argv[2]))); err = 0
except OSError as e: err = e.errno
print(json.dumps({'errno': err, 'secs': time.monotonic() - t, 'pid': __import__('os').getpid()}))
"""


def ns_connect(lab, addr, port=9, proto="tcp") -> dict:
    """connect() (or UDP sendto) from the dut namespace by a fresh python3:
    {"errno": 0 or errno, "secs": how long it took, "pid": its pid}."""
    r = lab.ns_exec(lab.dut, "/usr/bin/python3", "-c", CONNECT_CODE, addr, str(port), proto)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def pipeline_with_listeners(lab: Lab, tmp_path_factory, ports):
    """Generator for a module fixture: loader | analyzer (rules only) on the
    lab with fresh records/, and a real TCP listener on each of ports in the
    host under test; yields records/, then stops and unloads everything."""
    from netsentinel.testing.inbound import listener
    from netsentinel.testing.lab import start_pipeline
    rec = tmp_path_factory.mktemp("records")
    cfg = rec / "filter_config.json"
    cfg.write_text("{}")
    loader, analyzer = start_pipeline(lab, rec, cfg, ["--backend", "rules"])
    servers = []
    try:
        wait_until(lambda: (read_json(rec / "loader_status.json") or {}).get("running"), 90, what="loader")
        servers = [listener(lab.dut, lab.dut4, p) for p in ports]
        yield rec
    finally:
        for s in servers:
            s.terminate()
            s.wait(timeout=10)
        loader.terminate()
        assert loader.wait(timeout=20) == 0
        assert analyzer.wait(timeout=20) == 0
        unload_all(lab)
