"""Generic fixtures shared by the whole test suite (keep specific helpers in
their own modules)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parent.parent

from netsentinel.store import RecordsStore  # noqa: E402


@pytest.fixture
def shared_dir():
    """A root-owned 0755 directory other users (the dashboard's) can read:
    pytest's tmp_path sits under a 0700 directory."""
    path = Path(tempfile.mkdtemp(prefix="netsentinel-shared-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path)


@pytest.fixture
def records(tmp_path) -> RecordsStore:
    """A RecordsStore over a fresh temporary records dir (records.root).
    Warnings are kept in records.warnings instead of going to stderr."""
    warnings: list[str] = []
    store = RecordsStore(tmp_path / "records", lock_timeout=5.0, warn=warnings.append)
    store.warnings = warnings
    return store


@pytest.fixture
def run_script():
    """Run an entry-point script of the checkout as a real process:
    run_script("user_whitelist.py", "list", env={...}) -> CompletedProcess
    (text mode; env is added to this process's environment)."""
    def run(script: str, *args, env: dict | None = None, timeout: float = 60,
            input: str | None = None) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, str(PROJECT_ROOT / script), *map(str, args)],
                              capture_output=True, text=True, timeout=timeout, input=input,
                              cwd=PROJECT_ROOT, env={**os.environ, **(env or {})})
    return run
