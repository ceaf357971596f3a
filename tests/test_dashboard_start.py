"""scripts/dashboard.sh, the way `make run` (scripts/run.sh) starts the
dashboard: the login token is made root-only in records/, handed over in the
environment (never on a command line or in the log), and the printed login
URL signs a real browser in; the bare address gets the sign-in form only."""

from __future__ import annotations

import os
import pwd
import re
import stat
import subprocess
import urllib.request
from pathlib import Path

import pytest

from netsentinel.dashboard import access
from netsentinel.testing import dashboard_browser as B

pytestmark = pytest.mark.skipif(B.missing() is not None, reason=B.missing() or "")


def healthy(base: str) -> bool:
    try:
        with urllib.request.urlopen(f"{base}/_stcore/health", timeout=2) as r:
            return r.read().strip() == b"ok"
    except OSError:
        return False


def _streamlit_under(pid: int) -> int:
    """The streamlit process: pid itself (DASHBOARD_USER=root: bash exec'd
    it) or, by default, the child of runuser (which exec'd env, then python)."""
    while Path(f"/proc/{pid}/comm").read_text().strip() in ("runuser", "env"):
        pid = int(B.wait_until(lambda: Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
                               )[0])
    assert b"streamlit" in Path(f"/proc/{pid}/cmdline").read_bytes()
    return pid


def test_make_run_prints_a_login_url_that_signs_in(tmp_path, shared_dir):
    records, log, err = shared_dir / "records", tmp_path / "dashboard.log", tmp_path / "stderr"
    port = B.free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("NETSENTINEL_")
           and k != "DASHBOARD_USER"}
    env["NETSENTINEL_RECORDS"] = str(records)
    env["ZHIPUAI_API_KEY"] = "root-only-key-4242"  # exported by root before `sudo -E make run`
    with open(err, "wb") as out:
        proc = subprocess.Popen(["bash", "scripts/dashboard.sh", str(port), str(log)], cwd=B.ROOT,
                                env=env, stdout=subprocess.DEVNULL, stderr=out)
    try:
        line = B.wait_until(lambda: re.search(r"run: dashboard on (\S+)", err.read_text()), 30)
        url = line.group(1)
        token = (records / access.TOKEN_FILE).read_text().strip()
        st = (records / access.TOKEN_FILE).stat()
        assert stat.S_IMODE(st.st_mode) == 0o600 and st.st_uid == 0
        assert url == f"http://127.0.0.1:{port}/?token={token}"
        assert "as user netsentinel" in err.read_text()
        B.wait_until(lambda: healthy(f"http://127.0.0.1:{port}") or proc.poll() is not None, 60)
        assert proc.poll() is None, log.read_text()[-2000:]
        # By default it runs as the unprivileged netsentinel user, and the
        # token is only in its environment.
        dash = _streamlit_under(proc.pid)
        assert Path(f"/proc/{dash}").stat().st_uid == pwd.getpwnam("netsentinel").pw_uid
        assert token.encode() not in Path(f"/proc/{dash}/cmdline").read_bytes()
        assert f"NETSENTINEL_DASHBOARD_TOKEN={token}".encode() in \
            Path(f"/proc/{dash}/environ").read_bytes()
        assert b"root-only-key-4242" not in Path(f"/proc/{dash}/environ").read_bytes()
        with B.chromium_page() as page:
            page.goto(f"http://127.0.0.1:{port}/")
            page.locator("input[type=password]").wait_for()
            assert page.locator("[data-testid=stSidebar]").count() == 0
            page.goto(url)
            page.locator("[data-testid=stSidebar]").get_by_text("Audit", exact=True).wait_for()
            assert "token=" not in page.url
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    text = log.read_text()
    assert token not in text and "Traceback" not in text
