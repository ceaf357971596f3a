"""scripts/run.sh (what `make run` starts): its Ctrl-C stops the pipeline and
then removes the enforcement with `unified_ebpf.py --unload`, and says so."""

from __future__ import annotations

import os
import signal
import subprocess

import pytest

from netlab import (lab,  # noqa: F401  (module-scoped fixture)
                    ROOT, kernel_test_skip_reason, read_json, wait_until)

SKIP = kernel_test_skip_reason()
pytestmark = pytest.mark.skipif(SKIP is not None, reason=str(SKIP))


def run_and_stop(lab, tmp_path, *iface: str) -> str:
    """scripts/run.sh [IFACE] in the lab's namespace, Ctrl-C once the loader
    runs; what it printed, after checking it unloaded."""
    (tmp_path / "filter_config.json").write_text("{}")
    env = dict(os.environ, NETSENTINEL_RECORDS=str(tmp_path),
               NETSENTINEL_CONFIG=str(tmp_path / "filter_config.json"),
               DASHBOARD_PORT=str(20000 + os.getpid() % 20000))
    # In the lab's namespace, as a person's terminal would run it: its own
    # process group, which Ctrl-C signals as a whole.
    p = subprocess.Popen(["ip", "netns", "exec", lab.dut, "bash", str(ROOT / "scripts" / "run.sh"),
                          *iface], env=env, cwd=ROOT, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        wait_until(lambda: (read_json(tmp_path / "loader_status.json") or {}).get("running")
                   or p.poll() is not None, 120, what="the loader running")
        assert p.poll() is None and lab.xdp_attached()
        os.killpg(p.pid, signal.SIGINT)
        out = p.communicate(timeout=90)[0]
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
    assert p.returncode == 0, out[-3000:]
    assert "enforcement stays in place" in out                  # the loader alone would keep it
    assert "unload: detached link ns_xdp_filter" in out
    assert "nothing of NetSentinel's is enforced there now" in out
    assert not lab.xdp_attached()
    return out


def test_ctrl_c_unloads_and_says_so(lab, tmp_path):
    out = run_and_stop(lab, tmp_path, lab.dut_if)
    assert f"run: removing NetSentinel's enforcement (unified_ebpf.py --unload -i {lab.dut_if});" in out


def test_without_an_interface_it_unloads_the_default_routes_and_prints_a_command_that_does(lab, tmp_path):
    """No IFACE: the loader and --unload both take the default route's
    interface, and the command printed is one a person can run as it is."""
    lab.ns_exec(lab.dut, "ip", "route", "replace", "default", "via", lab.peer4, check=True)
    try:
        out = run_and_stop(lab, tmp_path)
    finally:
        lab.ns_exec(lab.dut, "ip", "route", "del", "default")
    assert "run: removing NetSentinel's enforcement (unified_ebpf.py --unload);" in out
    assert f"unload: {lab.dut_if}: removed" in out
