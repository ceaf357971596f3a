#!/usr/bin/env python3
"""bench/crowdsec_pull.py - how long does a big CrowdSec startup pull take to enforce?

A real CrowdSec LAPI (Debian's crowdsec, netsentinel/testing/crowdsec.py)
runs in the lab's host-under-test namespace with --decisions ban decisions
imported by `cscli decisions import` (the lab peer's address among them).
The real loader starts there as a bouncer; measured, from the loader's own
event timestamps:
  - startup -> last decision applied (the whole set in the kernel maps),
  - first crowdsec ban -> last (the apply itself),
then a restart on the same records: startup -> first full pull reconciled,
with how many bans it had to apply again (0: nothing duplicated).
The peer's ping must fail while the set is in place (enforcement checked).
"""

from __future__ import annotations

import json
import os
import signal
import time

from common import (Cleanup, LoaderProc, Progress, emit, lab_session, need_root, parser,
                    process_cpu_seconds, scratch_dir, stop_process, wait_until)

from netsentinel.timefmt import parse_iso
from netsentinel.testing.crowdsec import Lapi, missing_reason

NAME = "crowdsec_pull"
EPILOG = """examples:
  sudo .venv/bin/python bench/crowdsec_pull.py --quick      # 1,000 decisions
  sudo .venv/bin/python bench/crowdsec_pull.py              # 100,000 decisions

output: one JSON line on stdout ({"bench": "crowdsec_pull", "results": [...]}), a table on stderr.
"""


def decision_addresses(n: int) -> list[str]:
    """n distinct addresses from 11.0.0.1 upwards (never the lab's 10.x)."""
    base = (11 << 24) + 1
    return [f"{(a >> 24) & 255}.{(a >> 16) & 255}.{(a >> 8) & 255}.{a & 255}"
            for a in (base + i for i in range(n))]


def ts(ev: dict) -> float:
    return parse_iso(ev["ts"])


def run_loader(lab, records, lapi, key, cleanup):
    """A loader following the LAPI; returns it and its startup event."""
    lp = LoaderProc(lab, records, records / "filter_config.json", "--crowdsec-url", lapi.url,
                    "--crowdsec-key", key, "--crowdsec-interval", "2",
                    "--stats-interval", "0.5", echo=False)   # the restart's end, to 0.5 s
    cleanup.push(stop_process, lp.proc, signal.SIGTERM, 15)
    return lp, lp.wait_started(120)


def main() -> int:
    p = parser(NAME, __doc__, EPILOG)
    p.add_argument("--decisions", type=int, help="decisions in LAPI (default 100000; quick 1000)")
    args = p.parse_args()
    need_root(NAME)
    why = missing_reason()
    if why:
        print(f"bench/{NAME}.py: error: {why}", flush=True)
        return 2
    n = args.decisions or (1000 if args.quick else 100000)
    started, progress, cleanup = time.time(), Progress(NAME), Cleanup()
    try:
        with lab_session(cleanup, progress) as lab:
            records = scratch_dir(cleanup)
            (records / "filter_config.json").write_text("{}")
            lapi = Lapi(ns=lab.dut)
            cleanup.push(lapi.close)
            lapi.start()
            addrs = decision_addresses(n - 1) + [lab.peer4]
            (lapi.dir / "import.json").write_text(json.dumps(
                [{"duration": "4h", "scope": "ip", "type": "ban", "value": a,
                  "origin": "bench", "reason": "bench/list"} for a in addrs]))
            t = time.monotonic()
            lapi.cscli("decisions", "import", "-i", str(lapi.dir / "import.json"), timeout=1800)
            import_s = time.monotonic() - t
            progress(f"{n} decisions imported into LAPI in {import_s:.1f}s")
            key = lapi.bouncer_key("bench")

            lp, start = run_loader(lab, records, lapi, key, cleanup)
            # CPU seconds, startup -> enforced: the loader's own, and LAPI's (its answer)
            cpu0, lapi0 = process_cpu_seconds(lp.proc.pid), process_cpu_seconds(lapi.proc.pid)
            # A big pull is summed up per slice (`ban_batch`, docs/FLEET.md);
            # a small one is one `ban` event per address. Refusals: one each.
            done, refused, marks = 0, 0, []
            while done + refused < n:
                ev = lp.wait_for(lambda e: e["type"] in ("ban", "ban_batch", "ban_rejected")
                                 and e.get("result") != "restored", 1800, "crowdsec bans")
                if ev["type"] == "ban_rejected":
                    refused += 1
                elif ev["type"] == "ban":
                    done += 1
                else:
                    done += ev.get("applied", 0) + ev.get("updated", 0)
                marks.append(ts(ev))
            first, last = marks[0], marks[-1]
            cpu_s = process_cpu_seconds(lp.proc.pid) - cpu0
            lapi_cpu_s = process_cpu_seconds(lapi.proc.pid) - lapi0
            slowest = max((b - a for a, b in zip(marks, marks[1:])), default=0.0)
            load = os.getloadavg()
            progress(f"{n} bans in place {last - ts(start):.2f}s after startup, {cpu_s:.2f}s of "
                     f"loader CPU, {lapi_cpu_s:.2f}s of LAPI CPU ({refused} refused, "
                     f"{len(marks)} events, slowest slice {slowest:.3f}s, load {load[0]:.2f})")
            enforced = not lab.ping(lab.peer, lab.dut4, count=2)
            # The LAPI's answer: request, download and JSON (fetch), reading the decisions (read).
            bouncer = wait_until(lambda: next((e["crowdsec"]["bouncer"] for e in reversed(lp.all_events)
                                               if e["type"] == "stats"), None), 30, what="a stats event")
            fetch_s, read_s = bouncer["full_fetch_s"], bouncer["full_read_s"]
            stop_process(lp.proc, signal.SIGTERM, 15)

            lp2, start2 = run_loader(lab, records, lapi, key, cleanup)
            restored = wait_until(lambda: next((e for e in lp2.all_events if e["type"] == "stats"
                                                and e.get("crowdsec", {}).get("bouncer", {})
                                                .get("pulls", 0) >= 1 and e["crowdsec"]["bouncer"]
                                                ["pending"] == 0), None), 1800,
                                  what="the first pull after a restart")
            again = restored["crowdsec"]["bouncer"]["applied"]
            restart_s = ts(restored) - ts(start2)
            enforced2 = not lab.ping(lab.peer, lab.dut4, count=2)
            stop_process(lp2.proc, signal.SIGTERM, 15)
    finally:
        cleanup.run()
    results = [{"decisions": n, "import_s": round(import_s, 2),
                "startup_to_enforced_s": round(last - ts(start), 3), "full_fetch_s": fetch_s, "full_read_s": read_s,
                "loader_cpu_s": round(cpu_s, 2), "lapi_cpu_s": round(lapi_cpu_s, 2),
                "apply_s": round(last - first, 3), "slowest_slice_s": round(slowest, 3),
                "refused": refused, "enforced": enforced, "load_avg_1m": round(load[0], 2),
                "restart_to_pulled_s": round(restart_s, 3), "reapplied_after_restart": again,
                "enforced_after_restart": enforced2}]
    if args.plot:
        progress("no plot for this benchmark (one row)")
    r = results[0]
    emit(NAME, args.quick, {"decisions": n, "pull_interval_s": 2}, results, started,
         ["decisions", "startup->enforced s", "fetch s", "apply s", "slowest slice s",
          "restart->pulled s", "re-applied", "enforced"],
         [[n, r["startup_to_enforced_s"], fetch_s, r["apply_s"], r["slowest_slice_s"],
           r["restart_to_pulled_s"],
           r["reapplied_after_restart"], r["enforced"] and r["enforced_after_restart"]]])
    return 0 if enforced and enforced2 and again == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
