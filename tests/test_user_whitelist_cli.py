"""user_whitelist.py as a real process: add/list/remove/check, one-line
errors with exit code 2 for bad input (file untouched), 1 for a bad file."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from netsentinel.whitelist import DEFAULT_CONFIG

CLI = "user_whitelist.py"


@pytest.fixture
def cfg(tmp_path):
    return tmp_path / "conf" / "filter_config.json"


@pytest.fixture
def wl(run_script, cfg):
    """Run the CLI against the temporary config."""
    def run(*args, **kw):
        return run_script(CLI, "--config", cfg, *args, **kw)
    return run


def snapshot(path):
    st = os.stat(path)
    return path.read_bytes(), st.st_ino, st.st_mtime_ns


def one_line_error(proc, code: int) -> str:
    assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr)
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("user_whitelist.py: error: "), proc.stderr
    return lines[0]


def test_add_list_remove_round_trip(wl, cfg):
    p = wl("add", "ip", "192.0.2.10", "10.20.0.0/16", "::ffff:198.51.100.1", "2001:DB8::/32")
    assert p.returncode == 0, p.stderr
    assert p.stdout.splitlines() == ["added ip 192.0.2.10", "added ip 10.20.0.0/16",
                                     "added ip 198.51.100.1", "added ip 2001:db8::/32"]
    assert wl("add", "process", "chronyd", "/usr/sbin/sshd").returncode == 0
    assert wl("add", "port", "53", "123").returncode == 0
    again = wl("add", "port", "53")
    assert again.returncode == 0 and again.stdout.strip() == "port 53 already whitelisted"

    on_disk = json.loads(cfg.read_text())
    assert on_disk["trusted_ips"] == ["192.0.2.10", "10.20.0.0/16", "198.51.100.1",
                                      "2001:db8::/32"]
    assert on_disk["trusted_processes"] == ["chronyd", "/usr/sbin/sshd"]
    assert on_disk["trusted_ports"] == [53, 123]
    assert stat.S_IMODE(cfg.stat().st_mode) == 0o644

    table = wl("list")
    assert table.returncode == 0
    rows = [ln.split() for ln in table.stdout.splitlines() if ln.startswith("  ")]
    assert rows[0] == ["KIND", "VALUE"]
    assert ["ip", "10.20.0.0/16"] in rows and ["process", "/usr/sbin/sshd"] in rows
    assert ["port", "123"] in rows and len(rows) == 1 + 4 + 2 + 2
    assert "min_ban_prefix: ipv4 /8, ipv6 /32" in table.stdout

    r = wl("remove", "ip", "192.0.2.10", "203.0.113.1")
    assert r.returncode == 0
    assert r.stdout.splitlines() == ["removed ip 192.0.2.10", "ip 203.0.113.1 was not whitelisted"]
    assert wl("remove", "port", "123").returncode == 0
    data = json.loads(wl("list", "--json").stdout)
    assert data["path"] == str(cfg) and data["exists"] is True
    assert data["config"]["trusted_ips"] == ["10.20.0.0/16", "198.51.100.1", "2001:db8::/32"]
    assert data["config"]["trusted_ports"] == [53]
    assert set(DEFAULT_CONFIG) <= set(data["config"])


def test_missing_file_lists_defaults_and_checks_ok(wl, cfg):
    data = json.loads(wl("list", "--json").stdout)
    assert data == {"path": str(cfg), "exists": False, "config": DEFAULT_CONFIG}
    c = wl("check")
    assert c.returncode == 0 and c.stdout.startswith(f"ok: {cfg} does not exist")
    assert "(no entries)" in c.stdout
    assert not cfg.exists()  # reading never creates the file


def test_config_option_after_the_subcommand_and_env(run_script, cfg, tmp_path):
    assert run_script(CLI, "add", "port", "8443", "--config", cfg).returncode == 0
    assert json.loads(cfg.read_text())["trusted_ports"] == [8443]
    other = tmp_path / "env.json"
    assert run_script(CLI, "add", "port", "22", env={"NETSENTINEL_CONFIG": str(other)}).returncode == 0
    assert json.loads(other.read_text())["trusted_ports"] == [22]
    # --config beats the environment.
    shown = run_script(CLI, "list", "--json", "--config", cfg, env={"NETSENTINEL_CONFIG": str(other)})
    assert json.loads(shown.stdout)["config"]["trusted_ports"] == [8443]


@pytest.mark.parametrize("args, words", [
    (["add", "ip", "10.1.2.3/8"], "did you mean 10.0.0.0/8?"),
    (["add", "ip", "192.0.2.1", "not-an-ip"], "'not-an-ip' is not a valid IP address or CIDR"),
    (["add", "ip", "fe80::1%eth0"], "scoped IPv6"),
    (["add", "port", "0"], "outside 1-65535"),
    (["add", "port", "80", "http"], "'http' is not a number"),
    (["add", "process", "a-very-long-process-name"], "longer than 15 characters"),
    (["remove", "port", "99999"], "outside 1-65535"),
    (["add", "host", "1.2.3.4"], "invalid choice: 'host'"),
    (["add", "ip"], "required"),
    (["frobnicate"], "invalid choice"),
    ([], "required"),
    (["list", "--yaml"], "unrecognized arguments: --yaml"),
])
def test_bad_input_exit_2_one_line_file_untouched(wl, cfg, args, words):
    assert wl("add", "ip", "192.0.2.7").returncode == 0
    before = snapshot(cfg)
    p = wl(*args)
    assert words in one_line_error(p, 2)
    assert snapshot(cfg) == before


@pytest.mark.parametrize("content, words", [
    ('{"trusted_ips": ["192.0.2.1", ', "invalid JSON"),
    ('{"trusted_ports": [70000]}', "port 70000 is outside 1-65535"),
    ('["not", "an", "object"]', "must hold a JSON object"),
])
def test_invalid_file_exit_1_and_is_never_rewritten(wl, cfg, content, words):
    cfg.parent.mkdir(parents=True)
    cfg.write_text(content)
    before = snapshot(cfg)
    for args in (["check"], ["list"], ["list", "--json"], ["add", "ip", "192.0.2.9"],
                 ["remove", "port", "53"]):
        p = wl(*args)
        msg = one_line_error(p, 1)
        assert words in msg and str(cfg) in msg
        assert p.stdout == ""
    assert snapshot(cfg) == before
    assert [x.name for x in cfg.parent.iterdir() if x.name != ".lock"] == [cfg.name]


def test_check_reports_what_is_in_force(wl, cfg):
    wl("add", "ip", "10.20.0.0/16")
    c = wl("check")
    assert c.returncode == 0
    assert c.stdout.splitlines()[0] == f"ok: {cfg} is valid"
    assert "10.20.0.0/16" in c.stdout and "whitelisted_connections: hide" in c.stdout


def test_symlinked_config_is_refused(wl, cfg, tmp_path):
    real = tmp_path / "real.json"
    real.write_text(json.dumps({"trusted_ports": [1]}))
    cfg.parent.mkdir(parents=True)
    cfg.symlink_to(real)
    assert "symbolic link" in one_line_error(wl("list"), 1)
    one_line_error(wl("add", "port", "2"), 1)
    assert json.loads(real.read_text()) == {"trusted_ports": [1]}


def test_help_has_examples(run_script):
    h = run_script(CLI, "--help")
    assert h.returncode == 0
    assert "examples:" in h.stdout and "user_whitelist.py add ip 192.0.2.10" in h.stdout


def test_works_without_bcc(cfg):
    """The CLI never imports bcc (it runs where bcc is not installed)."""
    code = ("import runpy, sys\n"
            f"sys.argv = ['user_whitelist.py', '--config', {str(cfg)!r}, 'add', 'port', '53']\n"
            "try:\n    runpy.run_path('user_whitelist.py', run_name='__main__')\n"
            "except SystemExit as e:\n    assert e.code in (0, None), e.code\n"
            "assert 'bcc' not in sys.modules\n")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert p.returncode == 0, p.stderr
    assert json.loads(cfg.read_text())["trusted_ports"] == [53]


def test_works_without_root(run_script, tmp_path, request):
    """An unprivileged user can list a file and edit one in a folder they own."""
    if os.geteuid() != 0:
        pytest.skip("already unprivileged: the other tests cover it")
    runuser = shutil.which("runuser") or shutil.which("setpriv")
    if runuser is None:
        pytest.skip("neither runuser nor setpriv is installed")
    nobody = 65534
    # pytest's tmp_path is private to root; this folder must be searchable by nobody.
    shared = tempfile.mkdtemp(prefix="netsentinel-nobody-")
    request.addfinalizer(lambda: shutil.rmtree(shared, ignore_errors=True))
    os.chmod(shared, 0o755)
    own = Path(shared) / "nobody"
    own.mkdir()
    os.chown(own, nobody, nobody)
    theirs = Path(shared) / "root" / "filter_config.json"
    if os.path.basename(runuser) == "runuser":
        prefix = [runuser, "-u", "nobody", "--"]
    else:
        prefix = [runuser, f"--reuid={nobody}", f"--regid={nobody}", "--clear-groups"]
    script = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), CLI)
    mine = own / "filter_config.json"

    def as_nobody(*args):
        return subprocess.run([*prefix, sys.executable, script, *map(str, args)],
                              capture_output=True, text=True, cwd="/")
    probe = as_nobody("--help")
    if probe.returncode != 0:
        last = (probe.stderr.strip().splitlines() or ["?"])[-1]
        pytest.skip(f"user nobody cannot run this Python or checkout: {last}")
    assert as_nobody("--config", mine, "add", "ip", "192.0.2.10").returncode == 0
    assert json.loads(mine.read_text())["trusted_ips"] == ["192.0.2.10"]
    # root's file: readable, not writable, and a clear one-line error.
    assert run_script(CLI, "--config", theirs, "add", "port", "53").returncode == 0
    before = snapshot(theirs)
    assert json.loads(as_nobody("--config", theirs, "list", "--json").stdout)["config"][
        "trusted_ports"] == [53]
    denied = as_nobody("--config", theirs, "add", "port", "54")
    assert denied.returncode == 1 and len(denied.stderr.splitlines()) == 1, denied.stderr
    assert "Permission denied" in denied.stderr
    # A folder nobody may not even search: still one line, not a traceback.
    private = as_nobody("--config", tmp_path / "x" / "f.json", "add", "port", "1")
    assert private.returncode == 1 and len(private.stderr.splitlines()) == 1, private.stderr
    assert snapshot(theirs) == before
