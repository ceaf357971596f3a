#!/usr/bin/env python3
"""bench/gen_day.py - a day of traffic: 200,000 connection events, inbound
flow windows (a few floods among them), 300 pending threats and 10,000 bans,
all from the documentation address ranges (nothing is ever contacted).

  day.jsonl             the loader's JSON lines, spread over the 24 hours
                        before now: replay them into the real analyzer
                        (`llm_analyzer.py --records DIR/records --backend rules
                        < DIR/day.jsonl`) to fill the event store as it would be
  records/pending_threats.json, records/banned_ips.json
                        the review queue and the ban table of a busy day
  --store               also put the day's verdicts straight into
                        records/events.sqlite3 (no analyzer; for the bench)

The mix (seeded, the same every run): 200 programs, mostly browsers,
package managers, resolvers and agents on 443/80/53/123; some unusual
services; a few dual-use tools on reverse-shell ports; three port scanners.

USAGE: .venv/bin/python bench/gen_day.py --out DIR [--events N] [--store]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

from netsentinel.records import BANNED_IPS, PENDING_THREATS
from netsentinel.store import RecordsStore
from netsentinel.timefmt import utc_now_iso

DAY_S = 86400
# (comm, exe, level, category, ports, weight)
PROGRAMS = [
    ("firefox-esr", "/usr/lib/firefox-esr/firefox-esr", "INFO", "normal", (443, 80), 30),
    ("chromium", "/usr/lib/chromium/chromium", "INFO", "normal", (443,), 20),
    ("apt-get", "/usr/bin/apt-get", "INFO", "normal", (80, 443), 6),
    ("systemd-resolve", "/usr/lib/systemd/systemd-resolved", "INFO", "normal", (53,), 14),
    ("chronyd", "/usr/sbin/chronyd", "INFO", "normal", (123,), 3),
    ("curl", "/usr/bin/curl", "INFO", "normal", (443, 80), 8),
    ("python3", "/usr/bin/python3.11", "INFO", "normal", (443, 5432, 6379), 8),
    ("sshd", "/usr/sbin/sshd", "INFO", "normal", (22,), 3),
    ("node", "/usr/bin/node", "MEDIUM", "unusual_service", (8443, 9000, 3000), 3),
    ("nc", "/usr/bin/nc.openbsd", "HIGH", "suspicious_port", (4444, 1337), 0.3),
    ("bash", "/usr/bin/bash", "CRITICAL", "reverse_shell", (4444, 9001), 0.1),
    ("scanner", "/usr/local/bin/scanner", "HIGH", "port_scan", tuple(range(1, 1024)), 0.6),
]
_WEIGHTS = [p[5] for p in PROGRAMS]


def _addr(rng: random.Random, n: int) -> str:
    i = rng.randrange(n)
    return f"{('198.51.100', '203.0.113', '192.0.2')[i % 3]}.{i // 3 % 254 + 1}"


def day(n: int = 200_000, seed: int = 1, end: float | None = None):
    """(loader event, verdict) pairs in time order: n connections plus one
    flow window every 10 s (one source in 40 floods)."""
    rng = random.Random(seed)
    end = time.time() if end is None else end
    start = end - DAY_S
    times = sorted(start + rng.random() * DAY_S for _ in range(n))
    next_flow = start
    for i, t in enumerate(times):
        while next_flow <= t:
            src = _addr(rng, 120)
            flood = rng.random() < 0.025
            pps = rng.uniform(20_000, 90_000) if flood else rng.uniform(1, 300)
            ev = {"v": 1, "type": "flow", "ts": utc_now_iso(next_flow), "src": src, "family": "ipv4",
                  "window_s": 10.0, "pps": pps, "bps": pps * 60, "packets": int(pps * 10),
                  "bytes": int(pps * 600), "tcp": int(pps * 10), "udp": 0, "icmp": 0, "other": 0,
                  "tcp_syn": int(pps * 9.5 if flood else pps * 2), "tcp_ack": int(pps * 0.5),
                  "icmp_echo": 0, "udp_ssdp": 0, "udp_reflect": 0, "pkt_size_mean": 60.0,
                  "dport_buckets": 1, "rank": 1, "reason": "threshold" if flood else "top"}
            verdict = ({"level": "CRITICAL", "category": "syn_flood", "confidence": 0.9,
                        "reason": f"SYN flood from {src}: {pps:.0f} packets/s"} if flood else None)
            yield ev, verdict
            next_flow += 10
        comm, exe, level, category, ports, _ = rng.choices(PROGRAMS, _WEIGHTS)[0]
        daddr = _addr(rng, 2000 if level == "INFO" else 300)
        dport = rng.choice(ports)
        pid = 1000 + hash((comm, i // 5000)) % 30000
        ev = {"v": 1, "type": "connection", "ts": utc_now_iso(t), "pid": pid, "tid": pid,
              "ppid": 1, "uid": 0 if comm in ("sshd", "apt-get", "chronyd") else 1000, "comm": comm,
              "exe": exe, "cmdline": f"{exe} --session {i % 17}", "proc_error": None,
              "family": "ipv4", "saddr": "10.0.0.10", "sport": None, "daddr": daddr, "dport": dport,
              "mode": "tracepoint"}
        yield ev, {"level": level, "category": category, "confidence": 0.7 if level != "INFO" else 0.95,
                   "reason": f"{comm} connected to {daddr} on {dport}"}


def entry(i: int, ev: dict, verdict: dict) -> dict:
    """What the analyzer would record (RecordsSink.make_entry's shape)."""
    return {"id": f"day{i:08x}", "ts": ev["ts"], **verdict, "verdict_source": "rules",
            "rule_ids": [], "rule_level": verdict["level"], "llm_level": None, "note": None,
            "recommended_action": "review" if verdict["level"] != "INFO" else "none",
            "backend": "rules", "event": ev}


def pending_threats(n: int = 300, seed: int = 2) -> list[dict]:
    rng = random.Random(seed)
    now = time.time()
    out = []
    for i in range(n):
        comm, exe, level, category, ports, _ = rng.choice(PROGRAMS[8:])
        target = f"203.0.113.{i % 254 + 1}" if i < 254 else f"198.51.100.{i % 254 + 1}"
        t = utc_now_iso(now - rng.random() * DAY_S)
        out.append({"id": f"{i:012x}", "created_at": t, "last_seen": t, "count": rng.randint(1, 40),
                    "status": "pending", "decided_at": None, "decided_by": None, "note": None,
                    "level": "CRITICAL" if level == "CRITICAL" else "HIGH", "category": category,
                    "confidence": 0.7, "reason": f"{comm} connected to {target}",
                    "recommended_action": "ban the destination", "verdict_source": "rules",
                    "backend": "rules", "rule_ids": [], "target": target, "dedupe_key": target,
                    "event": {"v": 1, "type": "connection", "ts": t, "pid": 4000 + i, "uid": 1000,
                              "comm": comm, "exe": exe, "daddr": target, "dport": ports[0]}})
    return out


def bans(n: int = 10_000, seed: int = 3) -> dict:
    rng = random.Random(seed)
    now = time.time()
    out = {}
    for i in range(n):
        ip = f"100.{64 + i // 65536 % 64}.{i // 256 % 256}.{i % 256}"  # 100.64/10: shared space
        at = now - rng.random() * DAY_S
        out[ip] = {"reason": rng.choice(("ssh brute force", "syn_flood", "crowdsec: http probing")),
                   "source": rng.choice(("dashboard", "crowdsec", "auto-flood", "fail2ban")),
                   "banned_at": utc_now_iso(at), "expires_at": utc_now_iso(at + 7 * DAY_S),
                   "drops": rng.randint(0, 5000), "last_drop_at": None}
    return out


def fill_store(path: str, n: int, seed: int = 1, end: float | None = None, batch: int = 5000) -> int:
    """The day's verdicts straight into an event store; rows written."""
    from netsentinel.eventstore import Retention, open_store
    from netsentinel.eventstore.rows import row_of
    db = open_store(path, Retention(max_age_days=3650, max_bytes=1 << 40))
    rows, written = [], 0
    for i, (ev, verdict) in enumerate(day(n, seed, end)):
        if verdict is None:
            continue
        rows.append(row_of(entry(i, ev, verdict)))
        if len(rows) >= batch:
            db.add_rows(rows)
            written, rows = written + len(rows), []
    db.add_rows(rows)
    db.close()
    return written + len(rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench/gen_day.py", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, metavar="DIR")
    p.add_argument("--events", type=int, default=200_000, metavar="N")
    p.add_argument("--threats", type=int, default=300, metavar="N")
    p.add_argument("--bans", type=int, default=10_000, metavar="N")
    p.add_argument("--store", action="store_true", help="also fill records/events.sqlite3")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    end = time.time()
    with open(out / "day.jsonl", "w") as f:
        for ev, _ in day(args.events, end=end):
            f.write(json.dumps(ev, separators=(",", ":")) + "\n")
    records = RecordsStore(out / "records")
    records.write(PENDING_THREATS, pending_threats(args.threats))
    records.write(BANNED_IPS, bans(args.bans))
    if args.store:
        from netsentinel.eventstore import resolve_dsn
        fill_store(resolve_dsn(None, records), args.events, end=end)
    print(f"gen_day: {out / 'day.jsonl'} ({args.events} connections + flows), "
          f"{args.threats} pending threats, {args.bans} bans in {records.root}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
