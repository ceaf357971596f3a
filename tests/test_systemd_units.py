"""The systemd units and their installer. systemd is not PID 1 on this
machine, so: the units are checked by `systemd-analyze verify` (no warning
allowed), the service's ExecStart line is run as systemd would split it, the
dashboard's ExecStart runs as the unprivileged `netsentinel` user for real,
and units.sh installs into temporary folders standing in for /etc
(readiness over a real NOTIFY_SOCKET datagram socket: test_supervise.py)."""

from __future__ import annotations

import os
import pwd
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

import pytest

from netsentinel.testing.lab import wait_until

ROOT = Path(__file__).resolve().parent.parent
UNITS = ROOT / "scripts" / "systemd"
NAMES = ("netsentinel.service", "netsentinel-dashboard.service")


def render(name: str) -> str:
    return (UNITS / name).read_text().replace("@ROOT@", str(ROOT))


def exec_start(name: str, env: dict, setting: str = "ExecStart=") -> list[str]:
    """ExecStart split as systemd does: words, ${VAR} inside a word replaced
    by the whole value (one argument, spaces and all); a leading "+" (run
    as root) dropped."""
    (line,) = [x for x in render(name).splitlines() if x.startswith(setting)]
    return [re.sub(r"\$\{(\w+)\}", lambda m: env.get(m.group(1), ""), w)
            for w in shlex.split(line.split("=", 1)[1].removeprefix("+"))]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                    reason="systemd-analyze is not installed (Debian package systemd)")
def test_units_verify_without_a_warning(tmp_path):
    for name in NAMES:
        (tmp_path / name).write_text(render(name))
    p = subprocess.run(["systemd-analyze", "verify", "--man=no", *(str(tmp_path / n) for n in NAMES)],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0 and p.stderr.strip() == "", p.stderr
    service = render("netsentinel.service")
    for setting in ("Type=notify", "Restart=on-failure", "KillMode=mixed", "NotifyAccess=main",
                    "RestartPreventExitStatus=2"):
        assert f"\n{setting}\n" in service
    assert "\nUser=netsentinel\n" in render("netsentinel-dashboard.service")


def test_service_exec_start_parses_as_systemd_passes_it():
    env = {"NETSENTINEL_ANALYZER_ARGS": "--backend rules --model x y"}
    argv = exec_start("netsentinel.service", env)
    assert argv[:4] == [str(ROOT / ".venv" / "bin" / "python"), "-u", "-m", "netsentinel.service"]
    assert "--analyzer-args=--backend rules --model x y" in argv and "--interface=" in argv
    p = subprocess.run([sys.executable, *argv[1:], "--version"], capture_output=True, text=True,
                       cwd=ROOT, timeout=60)
    assert p.returncode == 0 and p.stdout.startswith("netsentinel-supervise "), p.stderr


def _units_sh(tmp_path, action: str, systemd: bool) -> subprocess.CompletedProcess:
    run_dir = tmp_path / "run-systemd-system"
    if systemd:
        run_dir.mkdir(exist_ok=True)
    env = {**os.environ, "UNIT_DIR": str(tmp_path / "etc-systemd"),
           "DEFAULT_FILE": str(tmp_path / "etc-default-netsentinel"),
           "BIN_LINK": str(tmp_path / "bin" / "netsentinel"), "SYSTEMD_RUN_DIR": str(run_dir)}
    return subprocess.run(["bash", str(UNITS / "units.sh"), action], capture_output=True, text=True,
                          env=env, timeout=60)


def test_units_sh_without_systemd_installs_nothing(tmp_path):
    p = _units_sh(tmp_path, "install", systemd=False)
    assert p.returncode == 0, p.stderr
    assert "systemd is not running here" in p.stdout and "sudo make run" in p.stdout
    assert not (tmp_path / "etc-systemd").exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="units.sh install creates a system user: needs root")
def test_units_sh_install_and_uninstall(tmp_path):
    p = _units_sh(tmp_path, "install", systemd=True)
    assert p.returncode == 0, p.stderr
    for name in NAMES:
        unit = tmp_path / "etc-systemd" / name
        assert unit.read_text() == render(name) and "@ROOT@" not in unit.read_text()
        assert unit.stat().st_mode & 0o777 == 0o644
    default = tmp_path / "etc-default-netsentinel"
    assert default.read_text() == (UNITS / "netsentinel.default").read_text()
    subprocess.run(["id", "netsentinel"], check=True, capture_output=True)  # the dashboard's user
    shell = subprocess.run(["getent", "passwd", "netsentinel"], capture_output=True, text=True).stdout
    assert shell.strip().endswith(":/usr/sbin/nologin")
    default.write_text("NETSENTINEL_INTERFACE=eth9\n")  # a person's edit survives a reinstall
    assert _units_sh(tmp_path, "install", systemd=True).returncode == 0
    assert default.read_text() == "NETSENTINEL_INTERFACE=eth9\n"
    p = _units_sh(tmp_path, "uninstall", systemd=True)
    assert p.returncode == 0, p.stderr
    assert not any((tmp_path / "etc-systemd" / n).exists() for n in NAMES)
    assert default.exists()


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("runuser") is None,
                    reason="running the dashboard as another user needs root and runuser")
def test_dashboard_exec_start_runs_as_the_unprivileged_user():
    if subprocess.run(["id", "netsentinel"], capture_output=True).returncode != 0:
        subprocess.run(["useradd", "--system", "--user-group", "--no-create-home", "--home-dir",
                        "/nonexistent", "--shell", "/usr/sbin/nologin", "netsentinel"], check=True)
    # Not under pytest's tmp_path: its parent is root's alone (0700).
    base = Path(tempfile.mkdtemp(prefix="netsentinel-dash-"))
    base.chmod(0o755)
    home = base / "home"
    home.mkdir()
    shutil.chown(home, "netsentinel", "netsentinel")
    port = 18000 + os.getpid() % 1000
    # ExecStartPre, as root: the root-only token handed over as a copy only
    # the dashboard's user can read (standing in for its RuntimeDirectory).
    copy = base / "token"
    unit = render("netsentinel-dashboard.service")
    assert "NETSENTINEL_DASHBOARD_TOKEN_FILE=/run/netsentinel-dashboard/token" in unit
    pre = [a.replace("/run/netsentinel-dashboard/token", str(copy))
           for a in exec_start("netsentinel-dashboard.service", {"NETSENTINEL_RECORDS": str(base / "records")},
                               "ExecStartPre=")]
    subprocess.run(pre, check=True, cwd=ROOT, capture_output=True)
    token = (base / "records" / ".dashboard_token").read_text().strip()
    st = copy.stat()
    assert (st.st_mode & 0o777, st.st_uid) == (0o600, pwd.getpwnam("netsentinel").pw_uid)
    seen = subprocess.run(["runuser", "-u", "netsentinel", "--", "env", f"HOME={home}",
                           f"NETSENTINEL_DASHBOARD_TOKEN_FILE={copy}", sys.executable, "-c",
                           "from netsentinel.dashboard import access; print(access.configured_token('/'))"],
                          cwd=ROOT, capture_output=True, text=True, check=True)
    assert seen.stdout.strip() == token  # the dashboard signs people in with root's token
    argv = exec_start("netsentinel-dashboard.service", {"NETSENTINEL_DASHBOARD_ADDRESS": "127.0.0.1",
                                                        "NETSENTINEL_DASHBOARD_PORT": str(port)})
    proc = subprocess.Popen(["runuser", "-u", "netsentinel", "--", "env", f"HOME={home}",
                             f"NETSENTINEL_RECORDS={base / 'records'}",
                             f"NETSENTINEL_DASHBOARD_TOKEN_FILE={copy}", *argv],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        def healthy():
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2) as r:
                return r.status == 200
        wait_until(healthy, 90, 0.5, "the dashboard's health endpoint", not_yet=(OSError,),
                   each=lambda: proc.poll() is None or pytest.fail(proc.stdout.read()))
        pid = proc.pid
        user = subprocess.run(["ps", "-o", "user=", "--ppid", str(pid)], capture_output=True,
                              text=True).stdout.split()
        assert user and set(user) == {"netsentinel"}, user
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
        shutil.rmtree(base)
