"""SEEDED TEST DATA for the dashboard tests and its screenshot: plausible
records/ files in the agreed formats (docs/ARCHITECTURE.md), written through
RecordsStore. Addresses are from the documentation ranges (192.0.2.0/24,
198.51.100.0/24, 203.0.113.0/24); nothing here came from a real capture.

Try the dashboard on it without root:
    .venv/bin/python tests/dashboard_seed.py /tmp/seeded
    .venv/bin/streamlit run dashboard.py -- --records /tmp/seeded --config /tmp/seeded/filter_config.json
"""

from __future__ import annotations

import os
import random
import sys
import time
from pathlib import Path


from netsentinel.eventstore import open_store, resolve_dsn  # noqa: E402
from netsentinel.eventstore.rows import record_row, row_of  # noqa: E402
from netsentinel.records import (ANALYZER_STATUS, BAN_COMMANDS_REJECTED, BANNED_IPS,  # noqa: E402
                                 DASHBOARD_LOGS, LOADER_STATUS, PENDING_THREATS)
from netsentinel.store import RecordsStore  # noqa: E402
from netsentinel.timefmt import utc_now_iso  # noqa: E402

SEED_NOTE = "seeded test data"

# (comm, exe, destination, port, level, category, reason, source, weight)
TRAFFIC = [
    ("firefox-esr", "/usr/lib/firefox-esr/firefox-esr", "198.51.100.20", 443, "INFO", "normal",
     "HTTPS to a web server", "rules", 30),
    ("apt-get", "/usr/bin/apt-get", "192.0.2.80", 80, "INFO", "normal",
     "package download over HTTP", "rules", 8),
    ("chronyd", "/usr/sbin/chronyd", "192.0.2.123", 123, "INFO", "normal", "NTP time sync", "rules", 6),
    ("systemd-resolve", "/usr/lib/systemd/systemd-resolved", "192.0.2.53", 53, "INFO", "normal",
     "DNS query", "rules", 14),
    ("curl", "/usr/bin/curl", "198.51.100.7", 443, "INFO", "normal", "HTTPS request", "rules", 10),
    ("python3", "/usr/bin/python3.11", "198.51.100.61", 8443, "MEDIUM", "unusual_service",
     "python3 talks to 198.51.100.61:8443, not a service this host usually uses", "llm", 5),
    ("nc", "/usr/bin/nc.openbsd", "203.0.113.9", 4444, "MEDIUM", "dual_use_tool",
     "nc connected to 203.0.113.9 on 4444, a port often used by reverse shells", "rules", 2),
    ("smbclient", "/usr/bin/smbclient", "198.51.100.23", 445, "HIGH", "suspicious_port",
     "smbclient connected to 198.51.100.23 on SMB (445), a port often used in attacks", "rules", 2),
    ("python3", "/usr/bin/python3.11", "203.0.113.50", 22, "CRITICAL", "port_scan",
     "port scan: pid 4242 (python3) touched 15 distinct ports on 203.0.113.50 within 60s", "rules", 3),
    (".x", "/tmp/.x", "203.0.113.77", 6667, "HIGH", "exe_in_writable_dir",
     "/tmp/.x connected to 203.0.113.77:6667 (IRC) from a world-writable directory", "llm", 1),
]

LLM_BACKEND = "ollama"


def _event(comm, exe, daddr, dport, ts, pid):
    return {"v": 1, "type": "connection", "ts": utc_now_iso(ts), "pid": pid, "tid": pid,
            "ppid": 1, "uid": 1000, "comm": comm, "exe": exe, "cmdline": f"{comm} {daddr}",
            "proc_error": None, "family": "ipv4", "saddr": "192.0.2.10", "sport": 40000 + pid % 20000,
            "daddr": daddr, "dport": dport, "mode": "tracepoint"}


def log_entries(n: int, now: float, span: float, rng: random.Random) -> list[dict]:
    weights = [t[-1] for t in TRAFFIC]
    out = []
    for i, ts in enumerate(sorted(now - rng.random() * span for _ in range(n))):
        comm, exe, daddr, dport, level, cat, reason, src, _ = rng.choices(TRAFFIC, weights)[0]
        out.append({"id": f"seed{i:06x}", "ts": utc_now_iso(ts), "level": level, "category": cat,
                    "confidence": round(rng.uniform(0.6, 0.98), 2), "reason": reason,
                    "recommended_action": "none" if level == "INFO" else "review",
                    "verdict_source": src, "backend": LLM_BACKEND if src == "llm" else "rules",
                    "rule_ids": [] if src == "llm" else [cat.replace("_", "-")],
                    "event": _event(comm, exe, daddr, dport, ts, 3000 + i % 700)})
    return out


def threat(tid: str, level: str, cat: str, target: str, comm: str, exe: str, dport: int,
           reason: str, count: int, now: float, source: str = "rules") -> dict:
    return {"id": tid, "created_at": utc_now_iso(now - 600), "last_seen": utc_now_iso(now - 20),
            "count": count, "status": "pending", "decided_at": None, "decided_by": None, "note": None,
            "level": level, "category": cat, "confidence": 0.95 if level == "CRITICAL" else 0.75,
            "reason": reason, "recommended_action": "ban the destination after review",
            "verdict_source": source, "backend": LLM_BACKEND if source == "llm" else "rules",
            "rule_ids": [cat.replace("_", "-")], "event": _event(comm, exe, target, dport, now - 20, 4242),
            "target": target, "dedupe_key": f"dst|{target}"}


def pending_threats(now: float) -> list[dict]:
    return [
        threat("seedcrit0001", "CRITICAL", "port_scan", "203.0.113.50", "python3", "/usr/bin/python3.11",
               22, "port scan: pid 4242 (python3) touched 15 distinct ports on 203.0.113.50 within "
               "60s (threshold 15)", 31, now),
        threat("seedhigh0002", "HIGH", "suspicious_port", "198.51.100.23", "smbclient",
               "/usr/bin/smbclient", 445, "smbclient connected to 198.51.100.23 on SMB (445), a port "
               "often used in attacks", 4, now),
        threat("seedhigh0003", "HIGH", "exe_in_writable_dir", "203.0.113.77", ".x", "/tmp/.x", 6667,
               "/tmp/.x connected to 203.0.113.77:6667 (IRC) from a world-writable directory; the "
               "model calls it likely command-and-control", 2, now, source="llm"),
    ]


def banned(now: float) -> dict:
    return {
        "203.0.113.7": {"reason": "CRITICAL port_scan: scanned 40 ports", "source": "review:seed0old01",
                        "banned_at": utc_now_iso(now - 5400), "expires_at": None, "drops": 18342,
                        "last_drop_at": utc_now_iso(now - 3)},
        "198.51.100.0/24": {"reason": "known-bad network (seeded)", "source": "manual",
                            "banned_at": utc_now_iso(now - 86400), "expires_at": utc_now_iso(now + 3 * 86400),
                            "drops": 2210, "last_drop_at": utc_now_iso(now - 95)},
        "2001:db8:bad::/48": {"reason": "CRITICAL syn_flood", "source": "auto",
                              "banned_at": utc_now_iso(now - 1200), "expires_at": utc_now_iso(now + 2400),
                              "drops": 91877, "last_drop_at": utc_now_iso(now - 1)},
    }


def store_rows(records: Path, entries: list[dict] = (), threats: list[dict] = ()) -> None:
    """Verdict entries and threats into the event store, as the analyzer
    records them (eventstore.rows), where the Overview, Events and History
    pages read them."""
    db = open_store(resolve_dsn(None, RecordsStore(records)))
    try:
        db.add_rows([row_of(e) for e in entries] + [record_row("threat", t) for t in threats])
    finally:
        db.close()


def heartbeat(store: RecordsStore, pid: int | None = None, now: float | None = None) -> None:
    """Loader and analyzer status as if both were running as `pid` (default:
    this process, so the dashboard sees a live pid)."""
    now = time.time() if now is None else now
    pid = os.getpid() if pid is None else pid
    store.write(LOADER_STATUS, {
        "pid": pid, "started_at": utc_now_iso(now - 7200), "updated_at": utc_now_iso(now),
        "running": True, "capture_mode": "tracepoint", "interface": "eth0", "xdp_mode": "generic",
        "cgroup_block": True, "stats": {"events": 18230, "lost": 0, "whitelisted": 950,
                                        "bans_active": 3, "drops_total": 112429, "blocked_connects": 7}})
    store.write(ANALYZER_STATUS, {
        "pid": pid, "started_at": utc_now_iso(now - 7100), "updated_at": utc_now_iso(now),
        "running": True, "backend": LLM_BACKEND, "backend_status": "ready: ollama at "
        "http://localhost:11434, model qwen3:8b", "model": "qwen3:8b", "events_total": 17280,
        "events_per_minute": 42, "counts": {"INFO": 16710, "MEDIUM": 488, "HIGH": 61, "CRITICAL": 21},
        "llm": {"calls": 803, "cache_hits": 2711, "queue_depth": 0, "queue_dropped": 0,
                "failures": 2, "rate_limited": 5}})


def seed(records: Path, *, events: int = 600, span: float = 3600.0, live: bool = True,
         seed_value: int = 7) -> RecordsStore:
    """Write every file the dashboard reads. live=False leaves out the status files."""
    store = RecordsStore(records)
    now = time.time()
    rng = random.Random(seed_value)
    entries = log_entries(events, now, span, rng)
    store.write(DASHBOARD_LOGS, {"updated_at": utc_now_iso(now), "max_entries": 2000,
                                 "entries": entries[-200:]})
    threats = pending_threats(now)
    store_rows(records, entries, threats)
    store.write(PENDING_THREATS, threats)
    store.write(BANNED_IPS, banned(now))
    store.write(BAN_COMMANDS_REJECTED, [{
        "command": {"action": "ban", "ip": "0.0.0.0/0", "reason": "typo", "source": "manual"},
        "error": "0.0.0.0/0 is too broad: ipv4 bans need a prefix of /8 or longer "
                 "(min_ban_prefix in filter_config.json)",
        "rejected_at": utc_now_iso(now - 900), "by": "loader"}])
    if live:
        heartbeat(store, now=now)
    return store


if __name__ == "__main__":
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/netsentinel-seeded")
    seed(target)
    print(f"{SEED_NOTE} written to {target}")
