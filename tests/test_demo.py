"""`make demo` as a user runs it (minus the dashboard and the wait): the
script completes, the ban it approves takes effect, nothing is left behind."""

import json
import subprocess

import pytest

from netlab import ROOT, VENV_PY, kernel_test_skip_reason, sh

SKIP = kernel_test_skip_reason()
pytestmark = pytest.mark.skipif(SKIP is not None, reason=str(SKIP))


def test_demo_runs_start_to_finish_and_cleans_up():
    r = subprocess.run([VENV_PY, str(ROOT / "scripts" / "demo.py"), "--no-dashboard", "--no-wait", "--json"],
                       capture_output=True, text=True, timeout=240, cwd=ROOT)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    result = json.loads(r.stdout.strip().splitlines()[-1])
    assert result["scan_threat"]
    assert result["blocked_connect"]["errno"] == 1   # EPERM from the cgroup hook, not a timeout
    assert result["drops"] >= 1
    # Banned if its source proved its address, else rate-limited on its own (issue 13).
    assert result["flood"]["response"] in ("ban", "ratelimit") and result["flood"]["drops"] > 100
    assert "[9/9] Done" in r.stdout
    listed = set(sh("ip", "netns", "list").stdout.split())
    assert len(result["namespaces"]) == 2 and not set(result["namespaces"]) & listed
