"""Shared by tests/test_kernel_contain.py: the victim process (a copy of
python3 that tries what it is told), a peer listener, a real unprivileged
user, and ways to queue commands and read the pinned contain map."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

import pytest

from netlab import VENV_PY, LoaderStarter, validate

USER = "nscontaintest"
EPERM = 1

# argv: host port [what]. With `what`, one attempt and its errno; without,
# the pid first, then one errno per line read ("connect", "sendto", "raw",
# "fork": connect() from a fork()ed child, "exec": from a child running
# /usr/bin/python3; "sleeper": a child running sleep, its pid; "hold": open
# a connection and keep it; "send": a round trip over it).
VICTIM = r"""
import os, socket, sys
DST = (sys.argv[1], int(sys.argv[2]))
TRY = ("import socket, sys\ntry:\n    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3)"
       ".close()\nexcept OSError as e:\n    sys.exit(e.errno)")
def attempt(what):
    try:
        if what == "connect":
            socket.create_connection(DST, timeout=3).close()
        elif what == "sendto":
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b"x", DST)
        elif what == "raw":
            socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP).close()
        elif what == "exec":   # a child that runs another program (a shell starting curl)
            child = os.fork()
            if child == 0:
                os.execv("/usr/bin/python3", ["python3", "-c", TRY, *sys.argv[1:3]])
            return os.waitstatus_to_exitcode(os.waitpid(child, 0)[1])
        elif what == "sleeper":   # a long-lived child running another program: its pid
            child = os.fork()
            if child == 0:
                os.execv("/usr/bin/sleep", ["sleep", "300"])
            return child
        elif what == "hold":   # a connection kept open, as a reverse shell keeps its own
            global HELD
            HELD = socket.create_connection(DST, timeout=3)
        elif what == "send":   # 0 when the echo comes back over the held connection
            HELD.sendall(b"ping")
            return 0 if HELD.recv(4) == b"ping" else 5
        elif what == "fork":
            r, w = os.pipe()
            child = os.fork()
            if child == 0:
                os.write(w, str(attempt("connect")).encode())
                os._exit(0)
            os.waitpid(child, 0)
            return int(os.read(r, 16))
        return 0
    except OSError as e:
        return e.errno or 110   # a timeout has no errno: ETIMEDOUT
if len(sys.argv) > 3:
    print(attempt(sys.argv[3]))
    sys.exit()
print(os.getpid(), flush=True)
for line in sys.stdin:
    print(attempt(line.strip()), flush=True)
"""

# A TCP echo server in the peer namespace.
LISTENER = r"""
import socket, sys, threading
def echo(c):
    while True:
        data = c.recv(64)
        if not data:
            break
        c.sendall(data)
    c.close()
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[1]))); s.listen(64)
print("ready", flush=True)
while True:
    threading.Thread(target=echo, args=(s.accept()[0],), daemon=True).start()
"""


@pytest.fixture(scope="module")
def user():
    subprocess.run(["userdel", USER], capture_output=True)   # a leftover from a killed run
    subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", USER],
                   check=True)
    try:
        yield USER
    finally:
        subprocess.run(["userdel", USER], check=True)


@pytest.fixture(scope="module")
def scanner():
    """A copy of python3 named `scanner`, in a directory every user can reach."""
    d = tempfile.mkdtemp(prefix="ns-contain-", dir="/var/tmp")
    os.chmod(d, 0o755)
    exe = Path(d) / "scanner"
    shutil.copy("/usr/bin/python3", exe)
    exe.chmod(0o755)
    try:
        yield str(exe)
    finally:
        shutil.rmtree(d)


@pytest.fixture(scope="module")
def port(lab):
    p = 41000 + lab.n
    proc = subprocess.Popen(["ip", "netns", "exec", lab.peer, "/usr/bin/python3", "-c", LISTENER, str(p)],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    yield p
    proc.kill()
    proc.wait()


@pytest.fixture
def start(lab, tmp_path):
    cfg = tmp_path / "filter_config.json"
    cfg.write_text("{}")
    with LoaderStarter(lab, tmp_path, cfg) as s:
        yield s


class Victim:
    """A long-running process in the dut namespace that tries what it is told."""

    def __init__(self, lab, exe: str, port: int, user: str | None = None):
        run_as = ["runuser", "-u", user, "--"] if user else []
        self.proc = subprocess.Popen(["ip", "netns", "exec", lab.dut, *run_as, exe, "-c", VICTIM,
                                      lab.peer4, str(port)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.pid = int(self.proc.stdout.readline())

    def __call__(self, what: str) -> int:
        self.proc.stdin.write(what + "\n")
        self.proc.stdin.flush()
        return int(self.proc.stdout.readline())

    def close(self) -> None:
        try:   # the process itself: under runuser it is not Popen's own
            os.kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.kill()
        self.proc.wait()


def once(lab, exe: str, port: int, what: str = "connect", user: str | None = None) -> int:
    """A fresh process of exe tries once; its errno (0: it got through)."""
    run_as = ["runuser", "-u", user, "--"] if user else []
    r = lab.ns_exec(lab.dut, *run_as, exe, "-c", VICTIM, lab.peer4, str(port), what)
    assert r.returncode == 0, r.stderr
    return int(r.stdout)


def queue(records: Path, *commands: dict) -> None:
    """Queue contain commands the way a script does: one file in the drop directory."""
    d = records / "contain_commands.d"
    tmp = d / ".cmd.tmp"
    tmp.write_text(json.dumps(list(commands)))
    tmp.rename(d / f"{os.urandom(4).hex()}.json")


def contain_event(lp, rid: str, result: str, timeout: float = 10) -> dict:
    return validate(lp.wait_for(lambda e: e["type"] == "contain" and e["id"] == rid
                                and e["result"] == result, timeout, f"contain {rid} {result}"))


def ctl(records: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([VENV_PY, "-m", "netsentinel", "--records", str(records), "contain", *args],
                          capture_output=True, text=True, timeout=60)


def contained_pids(lab) -> dict[int, int]:
    """{tgid: origin} in the pinned contain_pids map, read with bpftool."""
    path = f"{lab.pin_root}/{lab.dut_if}/contain_pids"
    out = {}
    for e in json.loads(subprocess.run(["bpftool", "-j", "map", "dump", "pinned", path], check=True,
                                       capture_output=True, text=True).stdout or "[]"):
        if "formatted" in e:
            out[int(e["formatted"]["key"])] = int(e["formatted"]["value"]["origin"])
        else:
            key = bytes(int(b, 16) for b in e["key"])
            value = bytes(int(b, 16) for b in e["value"])
            out[int.from_bytes(key, "little")] = int.from_bytes(value[24:28], "little")
    return out
