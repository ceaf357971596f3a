"""The pipeline supervisor for real: the loader (XDP on the lab's veth) and
the analyzer under netsentinel.service, readiness over a real AF_UNIX
datagram socket (as systemd's NOTIFY_SOCKET), a ban through the `netsentinel`
command, the analyzer killed with SIGKILL: restarted within seconds, told so
in its event stream, every ban still enforced, new bans still applied; then a
clean stop. Plus sd_notify on its own and the key=value log lines."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys

import pytest

from netlab import ROOT, VENV_PY, kernel_test_skip_reason, lab, read_json, wait_until  # noqa: F401 (lab: fixture)
from netsentinel import logfmt
from netsentinel.service import sdnotify

SKIP = kernel_test_skip_reason()


def test_logfmt_round_trip():
    s = logfmt.line("ban", "loader", ip="10.0.0.0/8", reason='say "no" = 2\nlines', ok=True,
                    empty="", gone=None)
    assert s.startswith("event=ban component=loader ip=10.0.0.0/8 ")
    assert "\n" not in s and "gone" not in s
    assert logfmt.parse(s) == {"event": "ban", "component": "loader", "ip": "10.0.0.0/8",
                               "reason": 'say "no" = 2\nlines', "ok": "true", "empty": ""}


def test_analyzer_decision_lines_are_key_value(tmp_path):
    """A new CRITICAL threat and its auto-ban, and a refused auto-ban, are
    one key=value line each on the analyzer's stderr."""
    from analyzer_support import conn, lines, run_analyzer
    # Three processes: one threat per process identity (issue 12).
    scan = [conn(i, daddr="203.0.113.55", dport=p, comm="scan-a", exe="/opt/scan-a")
            for i, p in enumerate(range(1000, 1040))]
    refused = [conn(100 + i, daddr="127.0.0.1", dport=p, comm="scan-b", exe="/opt/scan-b")
               for i, p in enumerate(range(2000, 2040))]
    r = run_analyzer(tmp_path, ["--backend", "rules", "--auto-ban-critical", "--auto-ban-ttl", "900"],
                     lines(scan + refused + [conn(200, dport=23, daddr="203.0.113.60", comm="telnet",
                                                  exe="/usr/bin/telnet")]))
    assert r.returncode == 0, r.stderr
    got = [logfmt.parse(x) for x in r.stderr.splitlines() if x.startswith("event=")]
    threats = {x["target"]: x for x in got if x["event"] == "threat"}
    assert threats["203.0.113.55"]["level"] == "CRITICAL" and threats["203.0.113.60"]["level"] == "HIGH"
    assert all(x["component"] == "analyzer" and x["id"] for x in threats.values())
    (ban,) = [x for x in got if x["event"] == "auto-ban"]
    assert (ban["ip"], ban["ttl_s"], ban["source"]) == ("203.0.113.55", "900", "auto")
    (no,) = [x for x in got if x["event"] == "auto-ban_refused"]
    assert no["ip"] == "127.0.0.1" and "covers 127.0.0.1" in no["error"]


def _listen(path) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(str(path))
    s.settimeout(0.2)
    return s


def test_sd_notify_sends_one_datagram_to_the_socket(tmp_path):
    with _listen(tmp_path / "notify") as s:
        assert sdnotify.notify("READY=1", "STATUS=up", address=str(tmp_path / "notify"))
        assert s.recv(4096) == b"READY=1\nSTATUS=up"
    abstract = f"@netsentinel-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.bind(b"\0" + abstract[1:].encode())
        assert sdnotify.notify("STOPPING=1", address=sdnotify.notify_socket_address(abstract))
        assert s.recv(4096) == b"STOPPING=1"
    assert sdnotify.notify_socket_address("") is None
    assert sdnotify.notify("READY=1", address=None) is (os.environ.get("NOTIFY_SOCKET") is not None)


class Messages:
    """What the supervisor sent to the notify socket, collected as it comes."""

    def __init__(self, sock: socket.socket):
        self.sock, self.got = sock, []

    def has(self, text: str) -> bool:
        try:
            while True:
                self.got.append(self.sock.recv(4096).decode())
        except (BlockingIOError, TimeoutError, socket.timeout):
            pass
        return any(text in m for m in self.got)


def ns(records, cfg, *args):
    return subprocess.run([VENV_PY, "-m", "netsentinel", "--records", str(records), "--config",
                           str(cfg), *args], capture_output=True, text=True, timeout=60, cwd=ROOT)


@pytest.mark.skipif(SKIP is not None, reason=str(SKIP))
def test_analyzer_sigkill_is_restarted_and_bans_stay(lab, tmp_path):
    records, cfg = tmp_path / "records", tmp_path / "filter_config.json"
    records.mkdir()
    cfg.write_text("{}")
    notify_path = tmp_path / "notify"
    log = open(tmp_path / "supervisor.log", "w+")
    with _listen(notify_path) as sock:
        msgs = Messages(sock)
        sup = subprocess.Popen(
            [VENV_PY, "-m", "netsentinel.service", "--netns", lab.dut, "-i", lab.dut_if,
             "--records", str(records), "--config", str(cfg), "--analyzer-args=--backend rules",
             "--loader-args=--stats-interval 1"],
            stdout=subprocess.DEVNULL, stderr=log, cwd=ROOT,
            env={**os.environ, "NOTIFY_SOCKET": str(notify_path)})
        try:
            wait_until(lambda: msgs.has("READY=1"), 90, what="READY=1 from the supervisor",
                       each=lambda: sup.poll() is None or pytest.fail(_tail(log)))
            first = wait_until(lambda: read_json(records / "analyzer_status.json"), 20,
                               what="analyzer status", not_yet=(json.JSONDecodeError,))
            # A ban through the command people use; the loader applies it.
            p = ns(records, cfg, "bans", "add", lab.peer4, "--reason", "supervise test")
            assert p.returncode == 0, p.stderr
            wait_until(lambda: lab.peer4 in (read_json(records / "banned_ips.json") or {}), 10,
                       what="the ban applied", not_yet=(json.JSONDecodeError,))
            assert not lab.ping(lab.peer, lab.dut4), "banned peer still gets through"

            os.kill(first["pid"], signal.SIGKILL)
            # The loader keeps enforcing while no analyzer runs.
            assert not lab.ping(lab.peer, lab.dut4), "ban lost when the analyzer died"
            st = wait_until(lambda: _restarted(records, first["pid"]), 15,
                            what="the analyzer restarted", not_yet=(json.JSONDecodeError,))
            assert st["analyzer_restarts"] == 1 and st["last_restart"]["why"] == "killed by SIGKILL"
            wait_until(lambda: (read_json(records / "analyzer_status.json") or {}).get("pid")
                       == st["analyzer_pid"], 20, what="the new analyzer's status",
                       not_yet=(json.JSONDecodeError,))
            assert msgs.has("STATUS=analyzer restarted 1 time(s); last: killed by SIGKILL")
            # A ban queued after the restart is applied; the old one still holds.
            assert ns(records, cfg, "bans", "add", lab.peer4b).returncode == 0
            wait_until(lambda: lab.peer4b in (read_json(records / "banned_ips.json") or {}), 10,
                       what="the second ban applied", not_yet=(json.JSONDecodeError,))
            assert not lab.ping(lab.peer, lab.dut4) and not lab.ping(lab.peer, lab.dut4,
                                                                     source=lab.peer4b)
            status = ns(records, cfg, "status")
            assert status.returncode == 0, status.stdout + status.stderr
            assert "analyzer restarts 1 (last: killed by SIGKILL" in status.stdout
            assert "bans: 2 active (manual 2)" in status.stdout
            assert "XDP " in status.stdout and "XDP off" not in status.stdout
        finally:
            if sup.poll() is None:
                sup.send_signal(signal.SIGTERM)
            code = sup.wait(timeout=60)
        assert code == 0, _tail(log)
        assert msgs.has("STOPPING=1")
    assert not lab.xdp_attached(), "XDP program left on the interface"
    assert (read_json(records / "supervisor_status.json") or {}).get("running") is False
    lines = [logfmt.parse(x) for x in _text(log).splitlines() if x.startswith("event=")]
    kinds = [(x["event"], x["component"]) for x in lines if x["component"] == "supervisor"]
    assert ("ready", "supervisor") in kinds and ("loader_exit", "supervisor") in kinds
    killed = [x for x in lines if x["event"] == "analyzer_exit" and x.get("why") == "killed by SIGKILL"]
    assert killed and killed[0]["restarts"] == "1" and float(killed[0]["restart_in_s"]) <= 1
    bans = [x for x in lines if x["event"] == "ban" and x["component"] == "loader"]
    assert {(x["ip"], x["result"], x["source"]) for x in bans} == {
        (lab.peer4, "applied", "manual"), (lab.peer4b, "applied", "manual")}
    # The restarted analyzer was told, in its own event stream.
    assert "analyzer restarted by the supervisor (killed by SIGKILL)" in _text(log)


@pytest.mark.skipif(SKIP is not None, reason=str(SKIP))
def test_an_analyzer_usage_error_stops_the_pipeline_with_status_2(tmp_path):
    """Restarting an analyzer that refuses its flags would fail forever: the
    loader is stopped (it detaches) and the supervisor exits 2, which the
    unit's RestartPreventExitStatus=2 leaves stopped."""
    r = subprocess.run([VENV_PY, "-m", "netsentinel.service", "--records", str(tmp_path / "rec"),
                        "--config", str(tmp_path / "f.json"), "--loader-args=--no-xdp",
                        "--analyzer-args=--no-such-flag"], capture_output=True, text=True,
                       cwd=ROOT, timeout=120)
    assert r.returncode == 2, r.stderr
    got = [logfmt.parse(x) for x in r.stderr.splitlines() if x.startswith("event=")]
    (exit_,) = [x for x in got if x["event"] == "analyzer_exit"]
    assert exit_["code"] == "2" and exit_["restart"].startswith("no (a usage error")
    assert [x for x in got if x["event"] == "loader_exit"][0]["code"] == "0"
    assert "llm_analyzer.py: error: unrecognized arguments: --no-such-flag" in r.stderr


def _restarted(records, old_pid):
    st = read_json(records / "supervisor_status.json") or {}
    new = st.get("analyzer_pid")
    return st if new and new != old_pid and st.get("analyzer_restarts") else None


def _text(log) -> str:
    log.flush()
    log.seek(0)
    return log.read()


def _tail(log) -> str:
    return "supervisor log:\n" + "\n".join(_text(log).splitlines()[-25:])
