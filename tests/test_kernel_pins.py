"""The pins and locks behind enforcement that outlives the loader: one loader
per interface, --unload waiting for it, incompatible pinned maps refused,
a pin directory a local user made first, interface names bpffs refuses.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess

import pytest

from netlab import (lab,  # noqa: F401  (module-scoped fixture)
                    ROOT, VENV_PY, LoaderProc, ban_event, kernel_test_skip_reason, sh, write_commands)
from persist_support import run  # noqa: F401  (run: fixture)
from netsentinel.kernel.pins import LoaderLock, PinDir

SKIP = kernel_test_skip_reason()
pytestmark = pytest.mark.skipif(SKIP is not None, reason=str(SKIP))


def test_second_loader_is_refused_and_unload_waits_for_the_first(lab, run, tmp_path):
    lp = run()
    other = tmp_path / "other"
    other.mkdir()
    second = LoaderProc(lab, other, tmp_path / "filter_config.json", echo=False)
    assert second.proc.wait(timeout=60) == 1
    err = "\n".join(second.stderr_lines)
    assert f"another loader (pid {lp.proc.pid})" in err and f"sudo kill {lp.proc.pid}" in err
    assert not second.all_events, "a refused loader wrote events"
    assert not (other / "loader_status.json").exists()
    # The same interface under another pin directory is the same interface.
    third = LoaderProc(lab, other, tmp_path / "filter_config.json", "--pin-dir",
                       f"{lab.pin_root}/elsewhere", echo=False)
    assert third.proc.wait(timeout=60) == 1
    assert f"another loader (pid {lp.proc.pid})" in "\n".join(third.stderr_lines)
    assert not os.path.exists(f"{lab.pin_root}/elsewhere")
    r = lab.unload()
    assert r.returncode == 1 and f"pid {lp.proc.pid}" in r.stderr
    assert lp.proc.poll() is None and lab.xdp_attached()
    # The lock is root's alone: an unprivileged user cannot even open it.
    lock = LoaderLock(PinDir(lab.pin_root, lab.dut_if)).path
    st = os.stat(lock)
    assert st.st_uid == 0 and stat.S_IMODE(st.st_mode) == 0o600
    r = subprocess.run(["runuser", "-u", "nobody", "--", "/usr/bin/python3", "-c",
                        f"open({str(lock)!r}, 'rb')"], capture_output=True, text=True)
    assert r.returncode != 0 and "PermissionError" in r.stderr


def test_incompatible_pinned_maps_are_refused_and_left_enforcing(lab, run, tmp_path):
    lp = run()
    write_commands(tmp_path, [{"action": "ban", "ip": lab.peer4}])
    ban_event(lp, lab.peer4, result="applied")
    assert lp.stop() == 0
    other = LoaderProc(lab, tmp_path, tmp_path / "filter_config.json", "--max-bans", "1024", echo=False)
    assert other.proc.wait(timeout=120) == 1
    err = "\n".join(other.stderr_lines)
    assert "pinned map bans4" in err and "--unload" in err and "old enforcement stays up" in err
    assert lab.xdp_attached() and not lab.ping(lab.peer, lab.dut4)


def test_a_local_user_cannot_stop_the_loader_by_taking_its_pin_dir(lab, run, tmp_path):
    """/sys/fs/bpf is often mode 1777. An unprivileged user who creates the
    pin root first (or a symlink there) must not keep enforcement from
    starting: the loader moves it aside, says so, and enforces."""
    shared = f"/run/netsentinel-lab/{lab.dut}-open"
    os.makedirs(shared, exist_ok=True)
    sh("mount", "-t", "bpf", "-o", "mode=1777", "bpf", shared)
    try:
        root = f"{shared}/netsentinel"
        r = subprocess.run(["runuser", "-u", "nobody", "--", "mkdir", "-m", "0777", root],
                           capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        assert os.stat(root).st_uid != 0
        lp = run("--pin-dir", root, "--ban", lab.peer4)
        assert any(f"{root} was owned by uid" in line and "moved aside" in line
                   for line in lp.stderr_lines)
        assert not lab.ping(lab.peer, lab.dut4)
        st = os.stat(root)
        assert st.st_uid == 0 and stat.S_IMODE(st.st_mode) == 0o700
        assert lp.stop() == 0
        r = sh(VENV_PY, str(ROOT / "unified_ebpf.py"), "--unload", "-i", lab.dut_if, "--pin-dir", root,
               check=False, timeout=60)
        assert r.returncode == 0, r.stderr
        assert not lab.xdp_attached()
        assert [n for n in os.listdir(shared) if n.startswith("netsentinel")] == \
            [n for n in os.listdir(shared) if n.startswith("netsentinel-untrusted-")] != []
    finally:
        sh("umount", shared, check=False)
        os.rmdir(shared)


def test_an_interface_name_with_a_dot_is_pinned_and_unloaded(lab, run):
    """bpffs refuses dots in names; VLAN interfaces have one (eth0.100). A veth
    named like one stands in (this kernel may lack the 8021q module)."""
    vlan = f"{lab.dut_if[:12]}.7"
    sh("ip", "-n", lab.dut, "link", "add", vlan, "type", "veth", "peer", "name", f"{lab.dut_if[:12]}p7")
    try:
        sh("ip", "-n", lab.dut, "link", "set", vlan, "up")
        lp = run(interface=vlan)
        assert lp.all_events[0]["pin_dir"] == f"{lab.pin_root}/{vlan.replace('.', '%2E')}"
        assert lp.stop() == 0
        assert lab.pin_dirs() == [vlan]
        r = lab.unload(vlan)
        assert r.returncode == 0 and "detached link ns_xdp_filter" in r.stdout, r.stderr
        assert lab.pin_dirs() == []
    finally:
        sh("ip", "-n", lab.dut, "link", "del", vlan, check=False)
