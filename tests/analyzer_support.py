"""Helpers for the analyzer tests: connection events, running the real
llm_analyzer.py as a process, reading what it wrote."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

from netsentinel.testing.lab import wait_until

ROOT = Path(__file__).resolve().parent.parent
ANALYZER = ROOT / "llm_analyzer.py"
T0 = datetime(2026, 11, 21, 22, 40, tzinfo=timezone.utc)

BASE_EVENT = {
    "v": 1, "type": "connection", "ts": "", "pid": 4242, "tid": 4242, "ppid": 100, "uid": 1000,
    "comm": "curl", "exe": "/usr/bin/curl", "cmdline": "curl http://10.0.0.5:8000/",
    "proc_error": None, "family": "ipv4", "saddr": "10.0.0.1", "sport": None,
    "daddr": "10.0.0.5", "dport": 8000, "mode": "tracepoint",
}


def ts(seconds: float = 0.0) -> str:
    return (T0 + timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def conn(at: float = 0.0, **fields) -> dict:
    """A connection event `at` seconds after T0."""
    return dict(BASE_EVENT, ts=ts(at), **fields)


def lines(events) -> str:
    return "".join((e if isinstance(e, str) else json.dumps(e)) + "\n" for e in events)


def analyzer_env(tmp_path: Path, **extra) -> dict:
    """An environment that sees nothing of this machine's own setup: its
    own whitelist file, no API key, an Ollama host where nothing listens."""
    env = dict(os.environ)
    env.update(NETSENTINEL_CONFIG=str(tmp_path / "filter_config.json"),
               ZHIPUAI_API_KEY="", OLLAMA_HOST="http://127.0.0.1:9", PYTHONUNBUFFERED="1")
    env.pop("NETSENTINEL_RECORDS", None)
    env.update(extra)
    return env


def run_analyzer(tmp_path: Path, args: list[str], stdin_text: str = "", *, timeout: float = 60,
                 records: Path | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    records = records or tmp_path / "records"
    return subprocess.run([sys.executable, str(ANALYZER), "--records", str(records), *args],
                          input=stdin_text, capture_output=True, text=True, timeout=timeout,
                          env=env or analyzer_env(tmp_path), cwd=tmp_path)


def start_analyzer(tmp_path: Path, args: list[str], *, records: Path | None = None,
                   env: dict | None = None) -> subprocess.Popen:
    records = records or tmp_path / "records"
    return subprocess.Popen([sys.executable, str(ANALYZER), "--records", str(records), *args],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env or analyzer_env(tmp_path), cwd=tmp_path)


def start_pipeline(tmp_path: Path, env: dict | None = None) -> tuple:
    """`unified_ebpf.py --no-xdp | llm_analyzer.py --backend rules` on
    tmp_path/records with an empty whitelist: (loader, analyzer, records)."""
    records = tmp_path / "records"
    records.mkdir()
    cfg = tmp_path / "filter_config.json"
    cfg.write_text("{}")
    env = env or analyzer_env(tmp_path)
    loader = subprocess.Popen([sys.executable, "-u", str(ROOT / "unified_ebpf.py"), "--no-xdp",
                               "--records", str(records), "--config", str(cfg)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=ROOT)
    analyzer = subprocess.Popen([sys.executable, "-u", str(ANALYZER), "--records", str(records),
                                 "--config", str(cfg), "--backend", "rules",
                                 "--status-interval", "0.3"],
                                stdin=loader.stdout, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, env=env, cwd=ROOT)
    loader.stdout.close()  # the analyzer holds the read end now
    return loader, analyzer, records


def read(records: Path, name: str, default=None):
    p = records / name
    if not p.exists():
        return default
    return json.loads(p.read_text())


def wait_for(fn, timeout: float = 10.0, what: str = "the analyzer's records"):
    """wait_until for records the analyzer is still writing: a file that does
    not exist yet (read() gives None: TypeError on indexing) or lacks a key
    is "not yet". Raises TimeoutError at the deadline."""
    return wait_until(fn, timeout, what=what, not_yet=(OSError, ValueError, KeyError, TypeError))


def pending(records: Path) -> list[dict]:
    return [t for t in read(records, "pending_threats.json", []) if t["status"] == "pending"]


def status_of(records):
    return read(records, "analyzer_status.json") or {}


def rss_kb(pid: int, field: str = "VmRSS") -> int:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} for pid {pid}")


def feed_and_measure(tmp_path, n: int, event) -> dict:
    """event(i) for i < n into a rules-only analyzer, in batches; its RSS
    (kB) once it has judged n/2 and n events: {n // 2: kB, n: kB}. Without
    the history file and the event store, whose buffers have caps of their
    own (tests/test_eventstore*.py): this measures the analyzer's state."""
    records = tmp_path / "records"
    proc = start_analyzer(tmp_path, ["--backend", "rules", "--status-interval", "0.5",
                                     "--no-history", "--no-store"])
    rss = {}
    try:
        for start in range(0, n, 5000):
            proc.stdin.write(lines(event(i) for i in range(start, min(n, start + 5000))))
            proc.stdin.flush()
            done = min(n, start + 5000)
            if done in (n // 2, n):
                assert wait_for(lambda: status_of(records).get("events_total") == done, timeout=120)
                rss[done] = rss_kb(proc.pid)
        proc.stdin.close()
        assert proc.wait(timeout=60) == 0
    finally:
        proc.kill()
    return rss
