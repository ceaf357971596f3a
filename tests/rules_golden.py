"""A fixed stream of connection events for the rule engine (the bench's
mix and a hostile one: scans, sweeps, slow scans, whitelisted, signals,
exe None, odd names and ports) and what the engine says of each, field
for field. tests/data/rules_golden.json.gz holds (digested) what the engine of
commit 1829852 said (before the engine's fast paths): the fast paths must
say the same.

Re-record (only when a verdict is meant to change, and say so in the
commit): PYTHONPATH=$PWD .venv/bin/python tests/rules_golden.py --record
"""

from __future__ import annotations

import gzip
import hashlib
import json
import random
import sys
from pathlib import Path

GOLDEN = Path(__file__).parent / "data" / "rules_golden.json.gz"
T0 = 1_780_000_000.0   # a fixed time: windows and baselines see the same gaps each run
CONFIGS = {"default": {},
           "low": {"scan_port_threshold": 4, "scan_host_threshold": 3, "scan_window_seconds": 5,
                   "scan_long_port_threshold": 9, "scan_long_host_threshold": 7,
                   "scan_long_window_seconds": 60, "scan_allowed_exes": ["/usr/bin/curl"]}}
WHITELIST = {"trusted_ips": ["192.0.2.0/24", "2001:db8:1::/48"], "trusted_processes": ["trusted",
             "/opt/trusted/bin/agent"], "trusted_ports": [9999]}


def _ts(seconds: float) -> str:
    import time
    whole = int(seconds)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)) + f".{int((seconds - whole) * 1e6):06d}Z"


def bench_events(n: int) -> list[dict]:
    """bench/analyzer.py's make_events, at a fixed time."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
    from analyzer import make_events
    out = []
    for i, line in enumerate(make_events(n).splitlines()):
        ev = json.loads(line)
        ev["ts"] = _ts(T0 + i / 1000)
        out.append(ev)
    return out


COMMS = ["curl", "bash", "nc", "nmap", "xmrig", "python3", "sshd", "trusted", "app{1}", "{daddr}",
         "scan ner", "ÿ\u202e", "", None, "A" * 40, "NC", "masscan"]
EXES = ["/usr/bin/curl", "/bin/bash", "/usr/bin/nc", None, "", "/tmp/x", "/dev/shm/.m (deleted)",
        "/usr/bin/allowed", "/opt/trusted/bin/agent", "/usr/bin/app{1}", "/x" * 700,
        "/usr/bin/python3 (deleted)", "/var/tmp/nmap"]
PORTS = [443, 80, 22, 23, 445, 3333, 5555, 6667, 6881, 9050, 9999, 0, 65535, 1080, 31337, 53]
CMDLINES = ["curl x", "xmrig -o stratum+tcp://pool:3333", "./m --donate-level 1", "", None,
            "sh -c 'a -a rx/0'", "{comm}"]
SIGNALS = [None, None, None, {"stdio_socket": "fd 0 socket:[1]"}, {"parent_service": "nginx"},
           {"stdio_socket": "fd 1", "parent_service": "php-fpm"}, "not a dict", [], {}]
DADDRS = ["198.51.100.7", "198.51.100.200", "203.0.113.66", "192.0.2.9", "10.1.2.3",
          "2001:db8:bad::1", "2001:db8:1::5", "2001:db8:2::9", "fe80::1", "::ffff:203.0.113.66"]


def hostile_events(n: int, seed: int = 7) -> list[dict]:
    """Random mixes of the odd and the malicious, and bursts of scans and
    sweeps (fast, slow, by pid, by session, in and across a /24, IPv6)."""
    rng = random.Random(seed)
    out: list[dict] = []
    t = T0 + 100_000

    def ev(**f) -> dict:
        base = {"v": 1, "type": "connection", "ts": _ts(t), "pid": 4000 + rng.randrange(50),
                "tid": 1, "ppid": rng.choice([1, None, 77]), "uid": rng.choice([0, 1000, 1001]),
                "comm": rng.choice(COMMS), "exe": rng.choice(EXES), "cmdline": rng.choice(CMDLINES),
                "proc_error": None, "family": "ipv4", "saddr": rng.choice(["10.0.0.1", None]),
                "sport": None, "daddr": rng.choice(DADDRS), "dport": rng.choice(PORTS),
                "mode": "tracepoint"}
        sig = rng.choice(SIGNALS)
        if sig is not None:
            base["signals"] = sig
        if rng.random() < .3:
            base["sid"] = rng.choice([4000, 4001, None])
            base["parent_comm"], base["session_leader"] = rng.choice([("sshd", "bash"), (None, None)])
        if rng.random() < .05:
            base["whitelisted"] = rng.choice(["loader: trusted ip", "", None])
        base.update(f)
        return base

    while len(out) < n:
        kind = rng.randrange(6)
        if kind == 0:   # a port scan: fast or slow, one pid or a loop of pids in a session
            host, slow, loop = rng.choice(DADDRS), rng.random() < .3, rng.random() < .5
            comm = rng.choice(["nc", "scanner", None, "bash"])
            for p in rng.sample(range(1, 2000), rng.randrange(3, 30)):
                t += 7.0 if slow else rng.random() * .2
                out.append(ev(daddr=host, dport=p, comm=comm, sid=4242,
                              pid=5000 + p if loop else 5000, exe=rng.choice([None, "/usr/bin/nc"])))
        elif kind == 1:   # a sweep, inside one /24 or across, IPv4 or IPv6
            port, wide, v6 = rng.choice([80, 445, 22]), rng.random() < .3, rng.random() < .2
            for h in rng.sample(range(1, 250), rng.randrange(3, 25)):
                t += rng.random() * .3
                addr = f"2001:db8:5::{h:x}" if v6 else f"10.{h if wide else 9}.{h % 7}.{h}"
                out.append(ev(daddr=addr, dport=port, comm="sweeper", exe="/usr/bin/sweeper",
                              pid=6000, sid=6000))
        elif kind == 2:   # a poller coming back to its destinations (baselines learned)
            for r in range(3):
                t += 6.0
                for h in range(1, 8):
                    out.append(ev(daddr=f"10.7.0.{h}", dport=9100, comm="poller",
                                  exe="/usr/bin/poller", pid=7000 + r))
        else:   # single odd events
            for _ in range(rng.randrange(1, 20)):
                t += rng.random()
                out.append(ev())
    return out[:n]


def outcome_record(out) -> dict:
    """Everything an outcome carries, JSON-ready."""
    v = out.verdict
    return {"verdict": dict(vars(v)), "settled": out.settled, "whitelisted": out.whitelisted,
            "target": out.target, "dedupe_key": out.dedupe_key, "targets": list(out.targets)}


def run_stream(cfg_name: str, events: list[dict]) -> list[dict]:
    """The engine's outcome of each event (and its memory at the end)."""
    from netsentinel.analyzer.rules import DEFAULT_RULES_PATH, RuleEngine
    from netsentinel.llm.config import validate_llm_config
    from netsentinel.whitelist import Whitelist
    engine, cfg = RuleEngine(DEFAULT_RULES_PATH), validate_llm_config(CONFIGS[cfg_name])
    # none, one with networks, two without (decided by port and process alone)
    wls = [None, Whitelist(WHITELIST), Whitelist(dict(WHITELIST, trusted_ips=[])),
           Whitelist({"trusted_processes": ["nc", "app7"], "trusted_ports": [23]})]
    rows = []
    for i, ev in enumerate(events):
        rec = outcome_record(engine.evaluate(ev, cfg, wls[i % 4]))
        rec["history"] = engine.history.recent(ev.get("pid"))
        rows.append(rec)
    rows.append({"memory": engine.memory()})
    return rows


def streams() -> dict[str, list[dict]]:
    bench, hostile = bench_events(6000), hostile_events(6000)
    return {f"{name}/{cfg}": evs for name, evs in (("bench", bench), ("hostile", hostile))
            for cfg in CONFIGS}


def digest(row: dict) -> str:
    """A row in 8 hex digits (the file stays small; a changed field changes it)."""
    return hashlib.sha256(json.dumps(row, sort_keys=True).encode()).hexdigest()[:8]


def digests() -> dict[str, list[str]]:
    """Each stream's rows, digested (its last row: the engine's memory, as is)."""
    out = {}
    for name, events in streams().items():
        rows = run_stream(name.split("/")[1], events)
        out[name] = [digest(r) for r in rows[:-1]] + [rows[-1]]
    return out


def record() -> None:
    GOLDEN.parent.mkdir(exist_ok=True)
    with gzip.open(GOLDEN, "wt", encoding="utf-8", compresslevel=9) as f:
        json.dump(digests(), f)


if __name__ == "__main__":
    if sys.argv[1:] != ["--record"]:
        raise SystemExit(__doc__)
    record()
