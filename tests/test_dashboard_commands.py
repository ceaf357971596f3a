"""What an unprivileged dashboard asks root to do (records/dashboard_commands.d/,
netsentinel/dashcmd.py), applied by the analyzer (analyzer/dashcmds.py).

A real system user in the netsentinel group (useradd --system, runuser)
writes the commands; a user outside the group cannot; the applier (root)
applies each with the root dashboard's checks, audits it naming the file's
owner uid and the claimed user as unverified, and refuses hostile ones with
a one-line reason in dashboard_commands.rejected.json, going on."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from dashboard_seed import seed, store_rows
from test_dashboard_rules import FLOW
from netsentinel import audit, dashcmd, dropdir, proposals, threats
from netsentinel.timefmt import utc_now_iso
from netsentinel.analyzer.dashcmds import DashboardCommands
from netsentinel.llm.config import DEFAULT_LLM_CONFIG, load_llm_config, save_llm_config
from netsentinel.records import (ANALYZER_STATUS, BAN_COMMANDS, CONTAIN_COMMANDS, DASHBOARD_COMMANDS,
                                 DASHBOARD_COMMANDS_REJECTED, DROP_DIRS, LLM_CONFIG, RULE_COMMANDS,
                                 RULE_PROPOSALS)
from netsentinel.store import RecordsStore
from netsentinel.testing.lab import wait_until
from netsentinel.testing.llm_standins import StandinServer
from netsentinel.whitelist import WhitelistFile

ROOT = Path(__file__).resolve().parent.parent
MEMBER = "ns-dash202"    # in the netsentinel group, as the dashboard's user is
OUTSIDER = "ns-out202"   # any other local user


def _user(name: str, *extra: str) -> None:
    subprocess.run(["userdel", name], capture_output=True)  # a leftover from a killed run
    subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin",
                    *extra, name], check=True)


@pytest.fixture(scope="module")
def users():
    subprocess.run(["groupadd", "--system", "-f", "netsentinel"], check=True)
    _user(MEMBER, "--gid", "netsentinel")
    _user(OUTSIDER)
    try:
        yield MEMBER, OUTSIDER
    finally:
        for name in (MEMBER, OUTSIDER):
            subprocess.run(["userdel", name], check=True)


@pytest.fixture
def rig(users):
    """root's records/ (0755, readable by the users) with seeded threats, the
    whitelist file, and the applier as the analyzer builds it."""
    base = Path(tempfile.mkdtemp(prefix="netsentinel-cmd202-"))
    base.chmod(0o755)
    records, config = base / "records", base / "filter_config.json"
    seed(records)
    config.write_text(json.dumps({"trusted_ips": ["192.0.2.0/28"]}))
    store = RecordsStore(records)
    warnings: list[str] = []
    cfg = dict(DEFAULT_LLM_CONFIG, backend="rules")
    save_llm_config(store, cfg)
    applier = DashboardCommands(store, WhitelistFile(config), warnings.append,
                                lambda: load_llm_config(store)[0])
    applier.poll()  # creates dashboard_commands.d (root:netsentinel 2770)
    try:
        yield store, config, applier, warnings
    finally:
        shutil.rmtree(base)


def submit_as(user: str, records: Path, kind: str, **fields) -> subprocess.CompletedProcess:
    """dashcmd.submit run by a real user (what the dashboard process does)."""
    code = ("import json, sys; from netsentinel import dashcmd; "
            "print(dashcmd.submit(sys.argv[1], sys.argv[2], 'session abc (claims: admin)', "
            "**json.loads(sys.argv[3])))")
    return subprocess.run(["runuser", "-u", user, "--", "env", "-i", f"PYTHONPATH={ROOT}", "HOME=/",
                           sys.executable, "-c", code, str(records), kind, json.dumps(fields)],
                          capture_output=True, text=True, cwd="/", timeout=60)


def entry(store: RecordsStore, cid: str) -> dict:
    return next(e for e in audit.read(store)[0] if e["details"].get("command_id") == cid)


def test_the_drop_directory_is_root_netsentinel_2770(rig):
    store, _, _, _ = rig
    st = os.stat(store.path(DASHBOARD_COMMANDS))
    assert (st.st_mode & 0o7777, st.st_uid) == (0o2770, 0)
    import grp
    assert st.st_gid == grp.getgrnam("netsentinel").gr_gid


def test_member_approves_rejects_trusts_and_changes_settings(rig):
    store, config, applier, _ = rig
    uid = pwd.getpwnam(MEMBER).pw_uid
    ids = {}
    for name, kind, fields in (
            ("approve", "approve", {"threat": "seedcrit0001", "ttl_seconds": 3600, "note": "seen"}),
            ("reject", "reject", {"threat": "seedhigh0002", "trust": True, "note": "file server"}),
            ("trust", "whitelist_add", {"entry_kind": "process", "value": "chronyd"}),
            ("settings", "settings", {"config": dict(load_llm_config(store)[0],
                                                     max_calls_per_minute=7)})):
        done = submit_as(MEMBER, store.root, kind, **fields)
        assert done.returncode == 0, done.stderr
        ids[name] = done.stdout.strip()
        file = next(store.path(DASHBOARD_COMMANDS).iterdir())
        assert file.stat().st_uid == uid  # the owner is who wrote it: the only identity trusted
        assert applier.poll() == 1
    assert list(store.path(DASHBOARD_COMMANDS).iterdir()) == []  # consumed
    pending = {t["id"]: t for t in threats.list_threats(store)}
    assert pending["seedcrit0001"]["status"] == "approved"
    assert pending["seedcrit0001"]["decided_by"].startswith(f"dashboard ({MEMBER})")
    ban = json.loads(store.path(BAN_COMMANDS).read_text())
    assert [(c["ip"], c["ttl_seconds"], c["threat_id"]) for c in ban] == [
        ("203.0.113.50", 3600, "seedcrit0001")]
    assert pending["seedhigh0002"]["status"] == "rejected"
    cfg = json.loads(config.read_text())
    assert "198.51.100.23" in cfg["trusted_ips"] and cfg["trusted_processes"] == ["chronyd"]
    assert load_llm_config(store)[0]["max_calls_per_minute"] == 7
    for name, cid in ids.items():
        e = entry(store, cid)
        assert e["outcome"] == "ok", (name, e)
        assert e["who"].startswith(f"uid {uid} ({MEMBER}) via {DASHBOARD_COMMANDS}")
        assert "says: session abc (claims: admin) (unverified)" in e["who"]
        assert dashcmd.outcome(store, cid) == "ok"


def test_refusals_are_kept_with_their_reason_and_the_applier_goes_on(rig):
    store, config, applier, warnings = rig
    before = config.read_text()
    bad = [("whitelist_add", {"entry_kind": "ip", "value": "0.0.0.0/0"}, "too broad"),
           ("approve", {"threat": "seedagg", "ttl_seconds": None, "note": None}, "no threat"),
           ("settings", {"config": dict(load_llm_config(store)[0], host="http://127.0.0.1:9/")},
            "only root"),
           ("settings", {"config": dict(load_llm_config(store)[0], backend="ollama")}, "only root"),
           ("settings", {"config": dict(load_llm_config(store)[0], model="/tmp/evil-model")},
            "only root"),
           ("settings", {"config": dict(load_llm_config(store)[0], known_bad_files=["/etc/shadow"])},
            "only root"),
           ("settings", {"config": dict(load_llm_config(store)[0], _x="anything")}, "unknown"),
           ("whitelist_save", {"config": {"trusted_ips": "all"}}, "must be a list")]
    ids = []
    for kind, fields, _ in bad:
        done = submit_as(MEMBER, store.root, kind, **fields)
        assert done.returncode == 0, done.stderr
        ids.append(done.stdout.strip())
    # Hostile files in the directory (the group may write anything there).
    d = store.path(DASHBOARD_COMMANDS)
    for name, body in (("a.json", b"\xff\xfe not json"), ("b.json", b'{"kind": "rm -rf"}'),
                       ("c.json", b'{"kind": "approve", "id": "x", "threat": "t", "shell": 1}'),
                       ("d.json", b"[" * 100000)):
        (d / name).write_bytes(body)
    assert applier.poll() == len(bad) + 4
    assert list(d.iterdir()) == []
    for (kind, _, why), cid in zip(bad, ids):
        assert why in dashcmd.outcome(store, cid), kind
    rejected = json.loads(store.path(DASHBOARD_COMMANDS_REJECTED).read_text())
    assert len(rejected) == len(bad) + 4
    assert all(r["error"].startswith("refused: ") and "\n" not in r["error"] for r in rejected)
    assert config.read_text() == before
    assert load_llm_config(store)[0]["backend"] == "rules"
    assert not store.path(BAN_COMMANDS).exists()
    assert len(warnings) == len(bad) + 4


def test_a_user_outside_the_group_cannot_queue_and_a_planted_file_is_refused(rig):
    store, _, applier, _ = rig
    done = submit_as(OUTSIDER, store.root, "approve", threat="seedcrit0001", ttl_seconds=None,
                     note=None)
    assert done.returncode != 0 and "Permission denied" in done.stderr
    # A file owned by the outsider (as if planted while it was a member) is refused.
    planted = store.path(DASHBOARD_COMMANDS) / "p.json"
    planted.write_text(json.dumps({"kind": "approve", "id": "p1", "threat": "seedcrit0001"}))
    os.chown(planted, pwd.getpwnam(OUTSIDER).pw_uid, -1)
    applier.poll()
    rejected = json.loads(store.path(DASHBOARD_COMMANDS_REJECTED).read_text())
    assert f"written by uid {pwd.getpwnam(OUTSIDER).pw_uid}, who is neither root nor in the " \
           "netsentinel group" in rejected[0]["error"]
    assert not planted.exists()
    # A hard link to a file root wrote elsewhere is not root's command.
    elsewhere = store.root.parent / "root-wrote-this.json"
    elsewhere.write_text(json.dumps({"kind": "approve", "id": "h1", "threat": "seedcrit0001"}))
    os.link(elsewhere, store.path(DASHBOARD_COMMANDS) / "h.json")
    applier.poll()
    rejected = json.loads(store.path(DASHBOARD_COMMANDS_REJECTED).read_text())
    assert "has 2 hard links" in rejected[-1]["error"]
    assert next(t for t in threats.list_threats(store) if t["id"] == "seedcrit0001")["status"] == "pending"
    assert not store.path(BAN_COMMANDS).exists()


def test_the_dashboard_as_an_unprivileged_user_decides_through_the_analyzer(rig, tmp_path):
    """The real pair: llm_analyzer.py as root, the dashboard (AppTest) as a
    netsentinel-group user. Approve, reject + trust, a whitelist entry and a
    settings change are carried out by the analyzer and audited with the
    user's uid; the backend/host stay root's; a ban goes to the loader's
    drop directory with an audit note."""
    store, config, _, _ = rig
    records = store.root
    store.path(LLM_CONFIG).unlink()  # the analyzer's flags decide the backend
    dropdir.ensure(records, BAN_COMMANDS)  # as the loader makes it at start
    env = {k: v for k, v in os.environ.items() if not k.startswith("NETSENTINEL_")}
    analyzer = subprocess.Popen([sys.executable, str(ROOT / "llm_analyzer.py"), "--records", str(records),
                                 "--config", str(config), "--backend", "rules", "--status-interval", "0.5"],
                                stdin=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=tmp_path)
    try:
        wait_until(lambda: (json.loads(store.path(ANALYZER_STATUS).read_text()).get("pid")
                            == analyzer.pid) or analyzer.poll() is not None, 60,
                   what="the analyzer's status")
        assert analyzer.poll() is None
        home = tmp_path / "home"
        home.mkdir()
        os.chown(home, pwd.getpwnam(MEMBER).pw_uid, -1)
        tmp_path.chmod(0o755)
        done = subprocess.run(
            ["runuser", "-u", MEMBER, "--", "env", "-i", f"PYTHONPATH={ROOT}:{ROOT / 'tests'}",
             f"HOME={home}", f"NETSENTINEL_RECORDS={records}", f"NETSENTINEL_CONFIG={config}",
             "NETSENTINEL_DASHBOARD_REFRESH=0", "NETSENTINEL_DASHBOARD_TOKEN=unpriv-test-token-0123456789",
             sys.executable, str(ROOT / "tests" / "dashboard_as_user.py")],
            capture_output=True, text=True, cwd=home, timeout=300)
    finally:
        analyzer.stdin.close()
        analyzer.wait(timeout=60)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    uid = pwd.getpwnam(MEMBER).pw_uid
    assert out["uid"] == uid and f"Runs as uid {uid} (unprivileged)" in out["info"]
    assert "Not recorded" not in out["warning"], out["warning"]
    for step in ("approve", "reject", "whitelist", "settings", "ban"):
        assert not out[step]["exception"] and not out[step]["error"], (step, out[step])
    assert "done by the analyzer" in out["approve"]["success"]
    assert "done by the analyzer" in out["reject"]["success"]
    assert "done by the analyzer" in out["whitelist"]["success"]
    assert "done by the analyzer" in out["settings"]["success"]
    assert "(tested by the analyzer)" in out["probe"]["success"], out["probe"]
    assert out["locked"] == {"llm_backend": True, "llm_host": True, "llm_model": True}
    # What root's files now say.
    by_id = {t["id"]: t for t in threats.list_threats(store)}
    assert by_id["seedcrit0001"]["status"] == "approved" and by_id["seedhigh0002"]["status"] == "rejected"
    assert [(c["ip"], c["ttl_seconds"]) for c in json.loads(store.path(BAN_COMMANDS).read_text())] == [
        ("203.0.113.50", 3600)]
    assert {"198.51.100.23", "198.51.100.77"} <= set(json.loads(config.read_text())["trusted_ips"])
    cfg = load_llm_config(store)[0]
    assert (cfg["max_calls_per_minute"], cfg["backend"]) == (9, "rules")
    queued = [json.loads(p.read_text()) for p in store.path(DROP_DIRS[0]).iterdir()]
    assert [(c["action"], c["ip"]) for c in queued] == [("ban", "203.0.113.63")]
    trail = {e["action"]: e for e in audit.read(store)[0]}
    for action in ("login", "approve", "reject", "whitelist_add", "settings", "ban"):
        assert trail[action]["who"].startswith(f"uid {uid} ({MEMBER}) via {DASHBOARD_COMMANDS}"), action
        assert trail[action]["outcome"] == "ok", trail[action]
        assert "(unverified)" in trail[action]["who"]
    status = json.loads(store.path(ANALYZER_STATUS).read_text())
    assert status["dashboard_commands"]["applied"] >= 5  # 4 decisions + the ban's audit note
    stderr = analyzer.stderr.read().decode()
    assert "Traceback" not in stderr, stderr[-3000:]


def test_member_decides_a_rule_proposal(rig):
    store, _, applier, _ = rig
    rule = {"id": "r1", "action": "drop", "src": "10.202.9.0/24", "proto": "any"}
    store.write(RULE_PROPOSALS, [
        {"id": f"prop{n}", "created_at": "2026-12-01T16:00:00.000000Z", "status": "pending",
         "rules": [{"id": "r1", "rule": rule, "valid": True}]} for n in (1, 2)])
    ok = submit_as(MEMBER, store.root, "proposal", proposal="prop1", approve=True, note=None)
    no = submit_as(MEMBER, store.root, "proposal", proposal="prop2", approve=False, note="noise")
    assert applier.poll() == 2
    assert (dashcmd.outcome(store, ok.stdout.strip()), dashcmd.outcome(store, no.stdout.strip())) == (
        "ok", "ok")
    decided = {p["id"]: p["status"] for p in json.loads(store.path(RULE_PROPOSALS).read_text())}
    assert decided == {"prop1": "approved", "prop2": "rejected"}
    queued = json.loads(store.path(RULE_COMMANDS).read_text())
    assert [(c["action"], c["rule"]["src"]) for c in queued] == [("add_rule", "10.202.9.0/24")]


def test_a_broken_target_file_refuses_the_command_instead_of_retrying_it_forever(rig):
    store, config, applier, warnings = rig
    config.write_text('{"trusted_ips": [')  # a person's half-finished edit
    done = submit_as(MEMBER, store.root, "whitelist_add", entry_kind="ip", value="198.51.100.9")
    approve = submit_as(MEMBER, store.root, "approve", threat="seedcrit0001", ttl_seconds=60, note=None)
    assert applier.poll() == 2 and list(store.path(DASHBOARD_COMMANDS).iterdir()) == []
    assert dashcmd.outcome(store, done.stdout.strip()).startswith("refused: ")
    assert dashcmd.outcome(store, approve.stdout.strip()).startswith("refused: ")  # fails closed
    assert config.read_text() == '{"trusted_ips": ['  # left for its author
    assert not store.path(BAN_COMMANDS).exists()


def test_connection_test_runs_in_the_analyzer_with_roots_settings(rig):
    """Test connection from the unprivileged dashboard: the analyzer (root,
    with the keys) probes the settings in force, off its writer thread."""
    store, _, applier, _ = rig
    with StandinServer() as server:
        save_llm_config(store, dict(load_llm_config(store)[0], backend="ollama", host=server.url,
                                    model="qwen3:8b"))
        done = submit_as(MEMBER, store.root, "probe")
        assert done.returncode == 0, done.stderr
        cid = done.stdout.strip()
        assert applier.poll() == 1
        entry = wait_until(lambda: dashcmd.answer(store, cid), 30, what="the probe's answer")
    assert entry["outcome"] == "ok", entry
    assert f"ollama at {server.url}, model qwen3:8b" in entry["details"]["message"]
    assert entry["who"].startswith(f"uid {pwd.getpwnam(MEMBER).pw_uid} ({MEMBER})")


def test_rule_proposal_is_asked_by_the_analyzer_with_roots_settings(rig):
    """"Propose rules" from the unprivileged dashboard: the analyzer (root,
    with the keys) asks the model in force about the floods in the event
    store; the proposal waits for a person, its id in the audit entry."""
    store, _, applier, _ = rig
    flow = dict(FLOW, ts=utc_now_iso(), src="198.51.100.66")
    store_rows(store.root, [{"id": "f1", "ts": flow["ts"], "level": "CRITICAL", "category": "icmp_flood",
                             "event": flow}])
    answer = {"summary": "drop the flood", "rules": [
        {"action": "drop", "src": "198.51.100.66", "proto": "icmp", "reason": "ICMP flood"}]}
    with StandinServer(lambda req: (200, json.dumps(answer))) as server:
        save_llm_config(store, dict(load_llm_config(store)[0], backend="ollama", host=server.url,
                                    model="standin-model"))
        done = submit_as(MEMBER, store.root, "propose")
        assert done.returncode == 0, done.stderr
        cid = done.stdout.strip()
        assert applier.poll() == 1
        entry = wait_until(lambda: dashcmd.answer(store, cid), 60, what="the proposal's answer")
    assert entry["outcome"] == "ok", entry
    (p,) = proposals.list_proposals(json.loads(store.path(RULE_PROPOSALS).read_text()), "pending")
    assert entry["details"]["proposal"] == p["id"] and "198.51.100.66" in p["trigger"]["src"]
    assert [r["rule"]["src"] for r in p["rules"] if r["valid"]] == ["198.51.100.66"]
    assert entry["who"].startswith(f"uid {pwd.getpwnam(MEMBER).pw_uid} ({MEMBER})")
    # Nothing to base rules on: refused with the reason, kept aside.
    store.path("events.sqlite3").unlink()
    cid = submit_as(MEMBER, store.root, "propose").stdout.strip()
    assert applier.poll() == 1
    entry = wait_until(lambda: dashcmd.answer(store, cid), 60, what="the refusal")
    assert entry["outcome"].startswith("refused: No flood evidence"), entry


def test_member_contains_a_threats_process_through_the_analyzer(rig):
    """Contain process from the unprivileged dashboard (the default): root's
    analyzer decides the threat and queues the contain command for the loader."""
    store, _, applier, _ = rig
    done = submit_as(MEMBER, store.root, "contain", threat="seedcrit0001", ttl_seconds=3600,
                     note="scanner", stop=None, by_exe=True)
    bad = submit_as(MEMBER, store.root, "contain", threat="seedhigh0002", ttl_seconds=None,
                    note=None, stop="HUP", by_exe=True)
    assert bad.returncode != 0 and "stop must be null, TERM or KILL" in bad.stderr  # refused at submit
    assert applier.poll() == 1
    assert dashcmd.outcome(store, done.stdout.strip()) == "ok"
    (cmd,) = json.loads(store.path(CONTAIN_COMMANDS).read_text())
    assert (cmd["action"], cmd["pid"], cmd["by_exe"], cmd["ttl_seconds"], cmd["threat_id"]) == (
        "contain", 4242, True, 3600, "seedcrit0001")
    t = next(t for t in threats.list_threats(store) if t["id"] == "seedcrit0001")
    assert t["status"] == "approved" and t["decided_by"].startswith(f"dashboard ({MEMBER}")
    assert entry(store, done.stdout.strip())["who"].startswith(f"uid {pwd.getpwnam(MEMBER).pw_uid}")
