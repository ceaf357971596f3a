"""records/ against a real unprivileged local user: the locks cannot be held
or removed by them, a records directory they could write is refused, and
the modes are exact whatever the umask."""

from __future__ import annotations

import grp
import json
import os
import pwd
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from netsentinel import dropdir, fsguard
from netsentinel.loader.cmdqueue import CommandQueue
from netsentinel.records import BAN_COMMANDS
from netsentinel.store import RecordsStore, StoreError
from netsentinel.testing.lab import wait_until

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("useradd"),
                                reason="needs root and useradd (a real unprivileged user)")


def _ensure_group() -> int:
    # What scripts/install.sh does.
    if subprocess.run(["getent", "group", fsguard.COMMAND_GROUP], capture_output=True).returncode:
        subprocess.run(["groupadd", "--system", fsguard.COMMAND_GROUP], check=True)
    return grp.getgrnam(fsguard.COMMAND_GROUP).gr_gid


def _make_user(*groups: str) -> str:
    name = f"nsh2-{os.urandom(3).hex()}"
    cmd = ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin"]
    if groups:
        cmd += ["-G", ",".join(groups)]
    subprocess.run([*cmd, name], check=True)
    return name


@pytest.fixture
def stranger():
    name = _make_user()
    yield name
    _remove_user(name)


@pytest.fixture
def member():
    _ensure_group()
    name = _make_user(fsguard.COMMAND_GROUP)
    yield name
    _remove_user(name)


def _remove_user(name: str) -> None:
    wait_until(lambda: subprocess.run(["userdel", name], capture_output=True).returncode == 0,
               timeout=10, what=f"userdel {name}")


@pytest.fixture
def shared():
    """A root-owned directory every user may search (pytest's tmp is 0700)."""
    d = Path(tempfile.mkdtemp(prefix="netsentinel-h2-"))
    d.chmod(0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def as_user(user: str, code: str, *args: str, wait: bool = True):
    cmd = ["runuser", "-u", user, "--", sys.executable, "-c", code, *args]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    if not wait:  # its own session, so stop() can end runuser and the child together
        return subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env, cwd="/",
                                start_new_session=True)
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd="/", timeout=60)


def stop(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, 9)
    proc.wait()


TRY_LOCK = """
import fcntl, os, sys
for path in sys.argv[1:]:
    try:
        fd = os.open(path, os.O_RDONLY)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        print("held", path)
    except OSError as e:
        print("open", type(e).__name__)
    try:
        os.unlink(path)
        print("deleted", path)
    except OSError as e:
        print("unlink", type(e).__name__)
"""

HOLD_LOCK = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDONLY)
fcntl.flock(fd, fcntl.LOCK_EX)
print("holding", flush=True)
time.sleep(600)
"""


def test_lock_files_are_root_only_whatever_the_umask(tmp_path):
    old = os.umask(0)
    try:
        store = RecordsStore(tmp_path / "rec")
        with store.locked():
            pass
        os.close(store.hold_loader_lock())
    finally:
        os.umask(old)
    for name in (".lock", ".loader.lock"):
        st = os.stat(store.root / name)
        assert (stat.S_IMODE(st.st_mode), st.st_uid) == (0o600, 0), name


def test_unprivileged_user_can_neither_hold_nor_delete_the_locks(shared, stranger):
    store = RecordsStore(shared / "rec", lock_timeout=5)
    with store.locked():
        pass
    os.close(store.hold_loader_lock())
    out = as_user(stranger, TRY_LOCK, str(store.root / ".lock"), str(store.root / ".loader.lock"))
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n").count("open PermissionError") == 2, out.stdout
    assert out.stdout.split("\n").count("unlink PermissionError") == 2, out.stdout
    with store.locked():  # and root's writers are not held up
        store.write("x.json", [1])


def test_lock_file_others_could_open_is_replaced_and_its_holder_powerless(shared, stranger):
    """Today's lock file is 0644: a user opens it read-only, flocks it, and
    every root writer times out (the loader used to exit on that)."""
    root = shared / "rec"
    root.mkdir(mode=0o755)
    lock = root / ".lock"
    lock.touch(mode=0o644)
    lock.chmod(0o644)
    holder = as_user(stranger, HOLD_LOCK, str(lock), wait=False)
    try:
        assert holder.stdout.readline().strip() == "holding"
        warnings = []
        store = RecordsStore(root, lock_timeout=3, warn=warnings.append)
        with store.locked():
            store.write("x.json", [1])
        assert any("replaced lock file" in w for w in warnings), warnings
        assert stat.S_IMODE(os.stat(lock).st_mode) == 0o600
    finally:
        stop(holder)


@pytest.mark.parametrize("how, fix", [("chmod", "chmod o-w"), ("chown", "chown root:root"),
                                      ("parent", "chown root:root")])
def test_records_directory_another_user_could_write_is_refused(shared, stranger, how, fix):
    rec = shared / "rec"
    if how == "parent":  # e.g. under a user's /tmp/mine: they can swap records/ itself
        (shared / "mine").mkdir()
        shutil.chown(shared / "mine", stranger)
        rec = shared / "mine" / "rec"
    rec.mkdir()
    if how == "chmod":
        rec.chmod(0o777)
    elif how == "chown":
        shutil.chown(rec, stranger)
    with pytest.raises(StoreError) as exc:
        RecordsStore(rec)
    assert fix in str(exc.value) and "\n" not in str(exc.value)


def test_checkout_owned_by_the_person_running_sudo_is_accepted(shared, stranger, monkeypatch):
    """`sudo make run` from your own checkout: records/ is root's, the folder
    above it yours; you are root already, so that is fine (anyone else is not)."""
    (shared / "checkout").mkdir()
    shutil.chown(shared / "checkout", stranger)
    monkeypatch.setenv("SUDO_UID", str(pwd.getpwnam(stranger).pw_uid))
    RecordsStore(shared / "checkout" / "records").write("x.json", [])
    monkeypatch.setenv("SUDO_UID", "0")
    with pytest.raises(StoreError, match="chown root:root"):
        RecordsStore(shared / "checkout" / "records")


def test_modes_and_owners_are_exact_whatever_the_umask(tmp_path):
    gid = _ensure_group()
    old = os.umask(0o077)
    try:
        store = RecordsStore(tmp_path / "rec")
        store.write(BAN_COMMANDS, [])
        store.write("banned_ips.json", {})
        d = dropdir.ensure(store.root, BAN_COMMANDS)
    finally:
        os.umask(old)

    def owner(p):
        st = os.stat(p)
        return stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid
    assert owner(store.root) == (0o755, 0, 0)
    assert owner(store.root / BAN_COMMANDS) == (0o660, 0, gid)
    assert owner(store.root / "banned_ips.json") == (0o644, 0, 0)
    assert owner(d) == (0o2770, 0, gid)


def test_command_file_others_can_write_is_set_aside_not_applied(tmp_path):
    store = RecordsStore(tmp_path)
    handled, refused = [], []
    q = CommandQueue(store, BAN_COMMANDS, handled.append, lambda r, e: refused.append(e),
                     commit=lambda: None)
    p = tmp_path / BAN_COMMANDS
    p.write_text(json.dumps([{"action": "ban", "ip": "203.0.113.4"}]))
    p.chmod(0o666)
    q.process()
    assert handled == [] and len(refused) == 1 and "chmod o-w" in refused[0]
    assert not p.exists() and list(tmp_path.glob(f"{BAN_COMMANDS}.corrupt-*"))


def test_group_member_queues_through_the_drop_directory(shared, member):
    """Not root: no lock for them; append_command drops a file the loader consumes."""
    store = RecordsStore(shared / "rec")
    dropdir.ensure(store.root, BAN_COMMANDS)
    with store.locked():
        pass
    code = ("import sys; from netsentinel.store import RecordsStore; "
            "RecordsStore(sys.argv[1]).append_command({'action': 'ban', 'ip': '203.0.113.8', "
            "'source': 'dashboard'})")
    out = as_user(member, code, str(store.root))
    assert out.returncode == 0, out.stderr
    handled = []
    q = CommandQueue(store, BAN_COMMANDS, handled.append, lambda r, e: None, commit=lambda: None)
    wait_until(lambda: (q.process(), handled)[1], timeout=10, what="drop file consumed")
    assert handled[0]["ip"] == "203.0.113.8" and handled[0]["source"] == "dashboard"
    assert list((store.root / "ban_commands.d").iterdir()) == []


def test_second_loader_on_one_records_directory_is_refused_with_the_pid(tmp_path):
    code = ("import sys, time; from netsentinel.store import RecordsStore; "
            "RecordsStore(sys.argv[1]).hold_loader_lock(); print('held', flush=True); time.sleep(600)")
    first = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE,
                             text=True)
    try:
        assert first.stdout.readline().strip() == "held"
        with pytest.raises(StoreError) as exc:
            RecordsStore(tmp_path).hold_loader_lock()
        assert f"another loader (pid {first.pid})" in str(exc.value)
        assert f"kill {first.pid}" in str(exc.value)
    finally:
        first.kill()
        first.wait()
    os.close(RecordsStore(tmp_path).hold_loader_lock())  # released when it died


@pytest.mark.parametrize("mode, loaded, words", [(0o600, True, None), (0o644, True, "readable"),
                                                 (0o666, False, "can change it")])
def test_env_file_modes(tmp_path, mode, loaded, words):
    env = tmp_path / ".env"
    env.write_text("ZHIPUAI_API_KEY=x\n")
    env.chmod(mode)
    said = []
    assert fsguard.secret_file_ok(env, said.append) is loaded
    assert (words is None and not said) or (len(said) == 1 and words in said[0]
                                            and "chmod 600" in said[0])
