"""`netsentinel unload` in the namespace lab: it runs the loader's --unload
as a process and reports what went; afterwards `ip -d link`, `bpftool cgroup
tree` and the pin directory show nothing of ours. Refused (status 1, one
line) while a loader runs, and for a user who is not root."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from netlab import (lab,  # noqa: F401  (module-scoped fixture)
                    ROOT, LoaderStarter, ban_event, kernel_test_skip_reason, sh, write_commands)
from netsentinel.abi import ENFORCER_CGROUP, ENFORCER_CONTAIN, ENFORCER_MAPS
from netsentinel.cliargs import EXIT_FAILURE, EXIT_USAGE

SKIP = kernel_test_skip_reason()
pytestmark = pytest.mark.skipif(SKIP is not None, reason=str(SKIP))


def netsentinel(*args: str, user: str | None = None) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "netsentinel", *args]
    if user:
        cmd = ["runuser", "-u", user, "--", "env", f"PYTHONPATH={os.environ.get('PYTHONPATH', ROOT)}",
               *cmd]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd="/")


def one_line_error(p: subprocess.CompletedProcess, code: int) -> str:
    assert p.returncode == code, (p.returncode, p.stdout, p.stderr)
    lines = p.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("netsentinel: error: "), p.stderr
    return lines[0]


def cgroup_prog_ids() -> set[int]:
    out = sh("bpftool", "-j", "cgroup", "tree").stdout or "[]"
    return {p["id"] for cg in json.loads(out) for p in cg.get("programs", [])}


def our_cgroup_programs(lp) -> set[int]:
    status = json.loads((lp.records / "loader_status.json").read_text())
    return {i for n, i in status["programs"].items() if n in ENFORCER_CGROUP}


def xdp_or_tc_on_dut(lab) -> str:
    """What `ip -d link` and `tc filter` show on the lab's interface that could be ours."""
    link = sh("ip", "-n", lab.dut, "-d", "link", "show", lab.dut_if).stdout
    return "\n".join(line for line in link.splitlines() if "xdp" in line or "prog/" in line)


@pytest.fixture
def records(tmp_path):
    (tmp_path / "filter_config.json").write_text("{}")
    return tmp_path


def test_unload_removes_what_a_crashed_loader_left(lab, records):
    with LoaderStarter(lab, records, records / "filter_config.json") as start:
        lp = start()
        write_commands(records, [{"action": "ban", "ip": lab.peer4, "reason": "unload test"}])
        ban_event(lp, lab.peer4)
        cg = our_cgroup_programs(lp)
        assert len(cg) == len(ENFORCER_CGROUP) and cg <= cgroup_prog_ids()
        # While it runs, unload is refused and nothing is taken down.
        line = one_line_error(netsentinel("unload", "-i", lab.dut_if, "--pin-dir", lab.pin_root),
                              EXIT_FAILURE)
        assert f"pid {lp.proc.pid}" in line
        assert lab.xdp_attached() and not lab.ping(lab.peer, lab.dut4)
        lp.stop(signal.SIGKILL)
        assert lab.xdp_attached() and not lab.ping(lab.peer, lab.dut4), "a crash keeps enforcing"
        # Not root: refused before anything runs.
        line = one_line_error(netsentinel("unload", "-i", lab.dut_if, "--pin-dir", lab.pin_root,
                                          user="nobody"), EXIT_FAILURE)
        assert "must run as root" in line and lab.xdp_attached()

        p = netsentinel("unload", "-i", lab.dut_if, "--pin-dir", lab.pin_root, "--json")
        assert p.returncode == 0 and p.stderr == "", p.stderr
        report = json.loads(p.stdout)
        assert report["interface"] == lab.dut_if and report["pin_dir"] == lab.pin_root
        links = [a for a in report["actions"] if a.startswith("detached link")]
        maps = [a for a in report["actions"] if a.startswith("removed map")]
        # The ingress filter, the cgroup hooks, and containment's links (issue 12).
        assert len(links) == 1 + len(ENFORCER_CGROUP) + len(ENFORCER_CONTAIN), links
        assert len(maps) == len(ENFORCER_MAPS)
        assert report["removed"] == len(links) + len(maps)
        # Nothing of ours anywhere: the link, the cgroup tree, bpffs.
        assert xdp_or_tc_on_dut(lab) == ""
        assert not (cg & cgroup_prog_ids())
        assert lab.pinned() == [] and lab.pin_dirs() == []
        assert lab.ping(lab.peer, lab.dut4), "the banned peer gets through once unloaded"

        # Again: nothing left to remove, said in words, status 0.
        p = netsentinel("unload", "-i", lab.dut_if, "--pin-dir", lab.pin_root)
        assert p.returncode == 0, p.stderr
        assert f"unload: nothing pinned for {lab.dut_if}" in p.stdout
        assert p.stdout.rstrip().endswith("nothing of NetSentinel's is enforced there now")


def test_unload_usage_errors():
    one_line_error(netsentinel("unload", "--pin-dir", "/sys/fs/bpf/a b"), EXIT_USAGE)
    line = one_line_error(netsentinel("unload", "--bogus"), EXIT_USAGE)
    assert line.endswith("(see netsentinel --help)")
