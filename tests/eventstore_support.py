"""Fixtures for the event store tests: each engine, real (SQLite in a
temporary directory; PostgreSQL on a throwaway server the session starts)."""

from __future__ import annotations

import itertools

import pytest

from netsentinel.testing import postgres

_DB_SEQ = itertools.count(1)


@pytest.fixture(scope="session")
def pg_server():
    why = postgres.unavailable()
    if why:
        print(f"PostgreSQL tests skipped: {why}")
        pytest.skip(why)
    server = postgres.PgServer()
    yield server
    server.close()


@pytest.fixture(params=["sqlite", "postgres"])
def dsn(request, tmp_path) -> str:
    """A fresh, empty store of each engine."""
    if request.param == "sqlite":
        return str(tmp_path / "events.sqlite3")
    return request.getfixturevalue("pg_server").create_db(f"t{next(_DB_SEQ)}")


def entry(i: int = 0, *, ts: str = "2026-12-01T10:00:00.000000Z", level: str = "INFO",
          **event) -> dict:
    """A verdict entry as RecordsSink.make_entry builds it (analysis time now)."""
    ev = {"v": 1, "type": "connection", "ts": ts, "pid": 100 + i, "uid": 1000, "comm": "curl",
          "exe": "/usr/bin/curl", "cmdline": "curl https://example.org/", "family": "ipv4",
          "saddr": "10.222.0.1", "daddr": "10.222.0.5", "dport": 443, "mode": "tracepoint", **event}
    return {"id": f"e{i:06x}", "ts": "2026-12-02T00:00:00.000000Z", "level": level,
            "category": "normal" if level == "INFO" else "suspicious_port", "confidence": 0.7,
            "reason": f"{ev['comm']} connected to {ev['daddr']}", "recommended_action": "none",
            "verdict_source": "rules", "rule_ids": [], "backend": "rules", "event": ev}
