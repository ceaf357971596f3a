"""The one error contract (netsentinel/cliargs.py), checked on every tool as
a real process: one-line usage errors with status 2, runtime failures with
status 1, --version, the contract in --help, and a closed stdout that ends
the tool quietly (status 141, nothing on stderr)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from netsentinel import __version__, cliargs

PROJECT_ROOT = Path(__file__).resolve().parent.parent
# (script path, name in messages)
TOOLS = [("unified_ebpf.py", "unified_ebpf.py"), ("llm_analyzer.py", "llm_analyzer.py"),
         ("user_whitelist.py", "user_whitelist.py"), ("dashboard.py", "dashboard.py"),
         ("scripts/traffic.py", "traffic.py")]
IDS = [name for _, name in TOOLS]


def run(args, *, stdout=subprocess.PIPE, env=None, input=""):
    return subprocess.run([sys.executable, *map(str, args)], stdout=stdout, stderr=subprocess.PIPE,
                          input=input, text=True, timeout=120, cwd=PROJECT_ROOT,
                          env={**os.environ, **(env or {})})


def run_into_closed_pipe(args, **kw):
    """Run with stdout a pipe whose reader has already left: every write
    fails with EPIPE, as in `tool ... | head -1` once head has its line."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        return run(args, stdout=write_end, **kw)
    finally:
        os.close(write_end)


def one_line_error(proc, name: str, code: int) -> str:
    assert proc.returncode == code, (proc.returncode, proc.stderr)
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{name}: error: "), proc.stderr
    return lines[0]


@pytest.mark.parametrize("script,name", TOOLS, ids=IDS)
def test_unknown_flag_is_one_line_usage_error(script, name):
    command = ["list"] if name == "user_whitelist.py" else []  # it needs a subcommand
    line = one_line_error(run([PROJECT_ROOT / script, *command, "--no-such-flag"]), name,
                          cliargs.EXIT_USAGE)
    assert line == (f"{name}: error: unrecognized arguments: --no-such-flag "
                    f"(see {name} --help)")


@pytest.mark.parametrize("script,name", TOOLS, ids=IDS)
def test_version(script, name):
    p = run([PROJECT_ROOT / script, "--version"])
    assert (p.returncode, p.stdout, p.stderr) == (0, f"{name} {__version__}\n", "")


@pytest.mark.parametrize("script,name", TOOLS, ids=IDS)
def test_help_states_the_contract(script, name):
    p = run([PROJECT_ROOT / script, "--help"])
    assert p.returncode == 0 and p.stderr == ""
    assert "exit status:" in p.stdout and f'"{name}: error: ..."' in p.stdout
    assert "--version" in p.stdout


@pytest.mark.parametrize("script,name", TOOLS, ids=IDS)
def test_help_into_a_closed_pipe_is_quiet(script, name):
    p = run_into_closed_pipe([PROJECT_ROOT / script, "--help"])
    assert (p.returncode, p.stderr) == (cliargs.EXIT_CLOSED_PIPE, "")


def test_subcommand_errors_are_one_line_too():
    one_line_error(run([PROJECT_ROOT / "llm_analyzer.py", "threats", "list", "--bogus"]),
                   "llm_analyzer.py", cliargs.EXIT_USAGE)
    one_line_error(run([PROJECT_ROOT / "llm_analyzer.py", "threats"]),
                   "llm_analyzer.py", cliargs.EXIT_USAGE)
    one_line_error(run([PROJECT_ROOT / "user_whitelist.py", "add", "colour", "x"]),
                   "user_whitelist.py", cliargs.EXIT_USAGE)


def test_dashboard_run_with_python_says_how_to_start_it():
    line = one_line_error(run([PROJECT_ROOT / "dashboard.py"]), "dashboard.py", cliargs.EXIT_USAGE)
    assert "streamlit run dashboard.py" in line


def test_loader_usage_errors_are_one_line():
    line = one_line_error(run([PROJECT_ROOT / "unified_ebpf.py", "--no-xdp", "--ban", "192.0.2.1"]),
                          "unified_ebpf.py", cliargs.EXIT_USAGE)
    assert "--ban needs enforcement" in line
    one_line_error(run([PROJECT_ROOT / "unified_ebpf.py", "--buffer-pages", "3"]),
                   "unified_ebpf.py", cliargs.EXIT_USAGE)
    # Checked before anything is loaded; without root the root check says no first.
    p = run([PROJECT_ROOT / "unified_ebpf.py", "-i", "nosuchif0"])
    if os.geteuid() == 0:
        assert "no interface named 'nosuchif0'" in one_line_error(p, "unified_ebpf.py",
                                                                  cliargs.EXIT_USAGE)
    else:
        assert "must run as root" in one_line_error(p, "unified_ebpf.py", cliargs.EXIT_FAILURE)


@pytest.mark.parametrize("args", [["threats", "list"], ["--backend", "rules"]],
                         ids=["threats-list", "analyzer"])
def test_analyzer_store_error_is_a_runtime_failure(tmp_path, args):
    """A records directory that cannot be made is a runtime failure, 1,
    in the analyzer as in the loader and user_whitelist.py."""
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    line = one_line_error(run([PROJECT_ROOT / "llm_analyzer.py", "--records", blocker / "records",
                               *args]), "llm_analyzer.py", cliargs.EXIT_FAILURE)
    assert "cannot create records directory" in line


@pytest.fixture
def one_threat(tmp_path):
    records = tmp_path / "records"
    records.mkdir()
    (records / "pending_threats.json").write_text(json.dumps([
        {"id": f"{i:012x}", "status": "pending", "level": "HIGH", "count": 1, "target": f"192.0.2.{i}",
         "category": "port_scan", "reason": "test"} for i in range(1, 4)]))
    return records


def test_closed_pipe_threats_list(one_threat):
    p = run_into_closed_pipe([PROJECT_ROOT / "llm_analyzer.py", "--records", one_threat,
                              "threats", "list"])
    assert (p.returncode, p.stderr) == (cliargs.EXIT_CLOSED_PIPE, "")


def test_closed_pipe_whitelist_list(tmp_path):
    p = run_into_closed_pipe([PROJECT_ROOT / "user_whitelist.py", "--config",
                              tmp_path / "filter_config.json", "list"])
    assert (p.returncode, p.stderr) == (cliargs.EXIT_CLOSED_PIPE, "")


def test_closed_pipe_loader_ebpf_dump():
    p = run_into_closed_pipe([PROJECT_ROOT / "unified_ebpf.py", "--ebpf"])
    assert (p.returncode, p.stderr) == (cliargs.EXIT_CLOSED_PIPE, "")


def test_head_in_a_real_shell_pipeline(one_threat, tmp_path):
    """What people type. The reader may or may not leave before the writer
    is done (a race that is theirs), so only the outcome both ways is checked:
    head's line, and nothing at all on stderr."""
    py = sys.executable
    for cmd, first in [
        (f"{py} unified_ebpf.py --ebpf | head -1", "// ---- conn_monitor (kprobe) cflags:"),
        (f"{py} llm_analyzer.py --records {one_threat} threats list | head -1", "ID  "),
        (f"{py} user_whitelist.py --config {tmp_path}/f.json list | head -1", "whitelist: "),
    ]:
        p = subprocess.run(["bash", "-c", f"set -o pipefail; {cmd}"], capture_output=True,
                           text=True, timeout=120, cwd=PROJECT_ROOT)
        assert p.stderr == "", (cmd, p.stderr)
        assert p.stdout.startswith(first) and p.stdout.count("\n") == 1, (cmd, p.stdout)
        assert p.returncode in (0, cliargs.EXIT_CLOSED_PIPE), (cmd, p.returncode)


def test_a_broken_pipe_elsewhere_is_not_swallowed(monkeypatch):
    """Only a closed stdout is quiet: EPIPE from, say, a socket is a real error."""
    monkeypatch.setattr(sys, "stdout", io.StringIO())

    @cliargs.quiet_on_closed_stdout
    def main():
        raise BrokenPipeError("a socket's peer went away")

    with pytest.raises(BrokenPipeError):
        main()


def test_tool_name():
    assert cliargs.tool_name("user_whitelist.py list") == "user_whitelist.py"
    assert cliargs.tool_name("streamlit run dashboard.py --") == "dashboard.py"
