"""The `netsentinel` command (python -m netsentinel) as a real process:
bans validated as the loader validates them and queued through the store,
threats decided one by one or in bulk by filter, whitelist delegated to
user_whitelist.py's code, status from the status files, and the CLI contract
(one-line errors, exit codes, --json on every listing, a closed stdout).
The running loader and supervisor are exercised in test_supervise.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from netsentinel import threats
from netsentinel.records import BAN_COMMANDS, BANNED_IPS, PENDING_THREATS
from netsentinel.store import RecordsStore
from netsentinel.timefmt import utc_now_iso

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def ns(records, tmp_path):
    cfg = tmp_path / "filter_config.json"

    def run(*args, input=None):
        return subprocess.run([sys.executable, "-m", "netsentinel", "--records", str(records.root),
                               "--config", str(cfg), *map(str, args)], capture_output=True,
                              text=True, timeout=60, cwd=ROOT, input=input)
    run.cfg = cfg
    return run


def error_line(p, code: int) -> str:
    assert p.returncode == code, (p.returncode, p.stdout, p.stderr)
    lines = p.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("netsentinel: error: "), p.stderr
    return lines[0]


def queued(records) -> list:
    return records.read(BAN_COMMANDS, default=[])


def test_bans_add_queues_exactly_what_the_loader_accepts(ns, records):
    p = ns("bans", "add", "203.0.113.7", "2001:db8::/64", "--ttl", "90m", "--reason", "ssh brute",
           "--source", "fail2ban")
    assert p.returncode == 0, p.stderr
    assert p.stdout.splitlines()[:2] == ["queued ban 203.0.113.7 for 1.5 h",
                                        "queued ban 2001:db8::/64 for 1.5 h"]
    assert "loader: not started" in p.stdout  # queued is not enforced, and it says so
    cmds = queued(records)
    assert [(c["action"], c["ip"], c["ttl_seconds"], c["source"], c["reason"]) for c in cmds] == [
        ("ban", "203.0.113.7", 5400, "fail2ban", "ssh brute"),
        ("ban", "2001:db8::/64", 5400, "fail2ban", "ssh brute")]
    p = ns("bans", "del", "203.0.113.7")
    assert p.returncode == 0 and p.stdout.startswith("queued unban 203.0.113.7"), p.stderr
    assert queued(records)[-1]["action"] == "unban"


@pytest.mark.parametrize("args, code, words", [
    (("0.0.0.0/0",), 1, "too broad"),                  # policy: the loader's words
    (("127.0.0.1",), 1, "an address of this machine"),  # would lock the owner out
    (("203.0.113.1", "not-an-address"), 2, "not a valid IP address"),
    (("203.0.113.1", "--ttl", "soon"), 2, "invalid duration"),
])
def test_bans_add_refusals_queue_nothing(ns, records, args, code, words):
    p = ns("bans", "add", *args)
    assert words in error_line(p, code)
    assert queued(records) == []


def test_bans_add_refuses_a_whitelisted_address(ns, records):
    assert ns("whitelist", "add", "ip", "198.51.100.0/24").returncode == 0
    assert "overlaps whitelisted 198.51.100.0/24" in error_line(ns("bans", "add", "198.51.100.9"), 1)
    assert queued(records) == []


def test_bans_list_table_and_json(ns, records):
    records.write(BANNED_IPS, {
        "203.0.113.5": {"reason": "scan", "source": "auto", "banned_at": utc_now_iso(),
                      "expires_at": None, "drops": 12, "last_drop_at": None},
        "10.9.0.0/16": {"reason": "f2b", "source": "fail2ban", "banned_at": utc_now_iso(),
                        "expires_at": utc_now_iso(time.time() + 7200), "drops": 0,
                        "last_drop_at": None}})
    p = ns("bans", "list")
    assert p.returncode == 0, p.stderr
    head, *rows = p.stdout.splitlines()
    assert head.split() == ["ADDRESS", "SOURCE", "BANNED", "EXPIRES", "DROPS", "REASON"]
    assert rows[0].split()[:2] == ["203.0.113.5", "auto"] and "never" in rows[0]
    assert rows[1].split()[:2] == ["10.9.0.0/16", "fail2ban"] and " in " in rows[1]
    js = json.loads(ns("bans", "list", "--json", "--source", "fail2ban").stdout)
    assert list(js) == ["10.9.0.0/16"]


def _threat(records, target: str, category: str, age_s: float, level: str = "HIGH") -> str:
    t, _ = threats.add_or_merge(records, {"level": level, "category": category, "target": target,
                                          "reason": f"{category} from {target}", "confidence": 0.9,
                                          "dedupe_key": f"{category}:{target}",
                                          "event": {"daddr": target, "dport": 22}})
    if age_s:
        def age(cur):
            for x in cur:
                if x["id"] == t["id"]:
                    x["created_at"] = utc_now_iso(time.time() - age_s)
            return cur
        records.update(PENDING_THREATS, age, default=[])
    return t["id"]


def test_threats_bulk_approve_by_category_and_age(ns, records):
    old1 = _threat(records, "203.0.113.21", "host_sweep", 7200)
    old2 = _threat(records, "203.0.113.22", "host_sweep", 5400)
    new = _threat(records, "203.0.113.23", "host_sweep", 0)
    other = _threat(records, "203.0.113.24", "port_scan", 7200, level="CRITICAL")
    p = ns("threats", "list", "--category", "host_sweep", "--older-than", "1h", "--json")
    assert sorted(t["id"] for t in json.loads(p.stdout)) == sorted([old1, old2])
    p = ns("threats", "approve", "--category", "host_sweep", "--older-than", "1h", "--dry-run")
    assert p.returncode == 0 and p.stdout.count("would approve") == 2
    assert queued(records) == []
    p = ns("threats", "approve", "--category", "host_sweep", "--older-than", "1h", "--ttl", "1d")
    assert p.returncode == 0, p.stderr
    assert sorted(c["ip"] for c in queued(records)) == ["203.0.113.21", "203.0.113.22"]
    assert {c["ttl_seconds"] for c in queued(records)} == {86400}
    status = {t["id"]: t["status"] for t in threats.list_threats(records)}
    assert status == {old1: "approved", old2: "approved", new: "pending", other: "pending"}
    p = ns("threats", "list", "--level", "CRITICAL")
    assert p.returncode == 0 and other in p.stdout and new not in p.stdout
    p = ns("threats", "reject", other, new, "--whitelist", "--note", "lab hosts")
    assert p.returncode == 0 and p.stdout.splitlines() == [
        f"rejected {other}; whitelisted 203.0.113.24", f"rejected {new}; whitelisted 203.0.113.23"]
    wl = json.loads(ns("whitelist", "list", "--json").stdout)
    assert {"203.0.113.23", "203.0.113.24"} <= set(wl["config"]["trusted_ips"])


def test_threats_show_and_refused_approval_stays_pending(ns, records):
    tid = _threat(records, "127.0.0.1", "port_scan", 0, level="CRITICAL")
    p = ns("threats", "show", tid)
    assert p.returncode == 0 and f"id:                 {tid}" in p.stdout and "127.0.0.1" in p.stdout
    assert json.loads(ns("threats", "show", tid, "--json").stdout)["id"] == tid
    p = ns("threats", "approve", tid)
    assert "1 of 1 threats not decided" in error_line(p, 1)
    assert f"refused {tid}: 127.0.0.1 covers" in p.stdout
    assert threats.list_threats(records)[0]["status"] == "pending" and queued(records) == []
    assert "no threat with id nope" in error_line(ns("threats", "show", "nope"), 2)
    assert "name threat ids or a filter" in error_line(ns("threats", "reject"), 2)


def test_status_without_a_running_pipeline_exits_1_and_says_why(ns, records):
    _threat(records, "203.0.113.30", "port_scan", 0, level="CRITICAL")
    p = ns("status")
    assert p.returncode == 1, p.stderr
    assert "loader: not started" in p.stdout and "analyzer: not started" in p.stdout
    assert "threats: 1 pending (CRITICAL 1)" in p.stdout
    js = json.loads(ns("status", "--json").stdout)
    assert js["loader"]["state"] == "absent" and js["threats"]["pending"] == 1
    assert "dashboard: no login token yet" in p.stdout


def test_status_shows_root_the_dashboard_login_url_and_others_why_not(records, shared_dir):
    """Issue 11: the login URL `make run` prints is in `netsentinel status`,
    for root; a user who cannot read the root-only token is told why."""
    from netsentinel.dashboard.access import load_or_create_token
    store = RecordsStore(shared_dir / "records")
    token = load_or_create_token(store.root)
    (shared_dir / "records").chmod(0o755)
    cmd = [sys.executable, "-m", "netsentinel", "--records", str(store.root), "status"]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=60, cwd=ROOT,
                       env={**os.environ, "DASHBOARD_PORT": "8601"})
    assert f"dashboard: http://127.0.0.1:8601/?token={token}" in p.stdout, p.stdout
    nobody = subprocess.run(["runuser", "-u", "nobody", "--", "env",
                             f"PYTHONPATH={os.environ.get('PYTHONPATH', ROOT)}", *cmd],
                            capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert "dashboard: the login token is root's: sudo netsentinel status" in nobody.stdout, \
        nobody.stdout + nobody.stderr
    assert token not in nobody.stdout + nobody.stderr


def test_contract_usage_errors_version_and_closed_stdout(ns, records):
    assert "invalid choice" in error_line(ns("bans", "frobnicate"), 2)
    assert "argument kind" in error_line(ns("whitelist", "add", "bogus", "x"), 2)
    v = ns("--version")
    assert v.returncode == 0 and v.stdout.split()[0] == "netsentinel"
    for i in range(50):
        _threat(records, f"203.0.113.{100 + i}", "port_scan", 0)
    p = subprocess.run(f"{sys.executable} -m netsentinel --records {records.root} threats list "
                       f"| head -1; exit ${{PIPESTATUS[0]}}", shell=True, executable="/bin/bash",
                       capture_output=True, text=True, cwd=ROOT, env={**os.environ})
    assert p.returncode in (0, 141) and p.stderr == "", p.stderr
    assert p.stdout.startswith("ID")


def _queue_by(records, source: str) -> list:
    return [(c["action"], c["ip"], c.get("ttl_seconds")) for c in queued(records)
            if c.get("source") == source]


def test_crowdsec_custom_bouncer_example_queues_bans(records, tmp_path):
    script = ROOT / "docs" / "integrations" / "netsentinel-custom-bouncer.sh"
    env = {**os.environ, "NETSENTINEL": f"{sys.executable} -m netsentinel",
           "NETSENTINEL_RECORDS": str(records.root), "NETSENTINEL_CONFIG": str(tmp_path / "f.json")}

    def bounce(*args):
        return subprocess.run([str(script), *args], capture_output=True, text=True, env=env,
                              cwd=ROOT, timeout=60)
    assert bounce("add", "203.0.113.50", "14400", "crowdsecurity/ssh-bf", "{}").returncode == 0
    assert bounce("add", "203.0.113.51", "0", "manual", "{}").returncode == 0
    assert bounce("del", "203.0.113.50", "0", "expired", "{}").returncode == 0
    refused = bounce("add", "127.0.0.1", "60", "x", "{}")
    assert refused.returncode == 1 and refused.stderr.startswith("netsentinel: error: ban refused")
    assert _queue_by(records, "crowdsec") == [("ban", "203.0.113.50", 14400),
                                              ("ban", "203.0.113.51", None),
                                              ("unban", "203.0.113.50", None)]


def test_fail2ban_action_commands_run_as_fail2ban_would(records, tmp_path):
    """fail2ban is not installed here: read the action file as fail2ban does
    (an INI file, <tag> substitution) and run its actionban/actionunban with sh."""
    import configparser
    cp = configparser.ConfigParser(interpolation=None)
    cp.read(ROOT / "docs" / "integrations" / "fail2ban-netsentinel.conf")
    tags = {"netsentinel": f"{sys.executable} -m netsentinel", "records": str(records.root),
            "name": "sshd", "failures": "5"}
    env = {**os.environ, "NETSENTINEL_CONFIG": str(tmp_path / "f.json")}

    def act(which: str, ip: str, bantime: str):
        cmd = cp["Definition"][which]
        for k, v in {**tags, "ip": ip, "bantime": bantime}.items():
            cmd = cmd.replace(f"<{k}>", v)
        return subprocess.run(["sh", "-c", cmd], capture_output=True, text=True, env=env, timeout=60)
    assert set(cp["Init"]) >= {"netsentinel", "records"}
    assert act("actionban", "203.0.113.60", "600").returncode == 0
    assert act("actionban", "203.0.113.61", "-1").returncode == 0
    assert act("actionunban", "203.0.113.60", "600").returncode == 0
    assert _queue_by(records, "fail2ban") == [("ban", "203.0.113.60", 600), ("ban", "203.0.113.61", None),
                                              ("unban", "203.0.113.60", None)]
    assert [c.get("reason") for c in queued(records)][:1] == ["fail2ban sshd: 5 failures"]
