"""The loader's status file and stats events, read off a running Loader
(loader/run.py): what it counted, what it has in the kernel."""

from __future__ import annotations

import os
import time

from .. import __version__

from . import cmdfan
from ..kernel.libbpf import program_ids
from ..timefmt import utc_now_iso


def stats(loader) -> dict:
    """The counters of the stream's "stats" events and the status file."""
    totals = loader.enforcer.totals() if loader.enforcer and loader.enforcer.bpf else {}
    return {
        "uptime_s": round(time.time() - loader.started, 3),
        **loader.counts,
        "bans_active": len(loader.bans.bans) if loader.bans else 0,
        "drops_total": totals.get("xdp_drops", 0),
        "blocked_connects": totals.get("connect_blocked", 0) + totals.get("sendmsg_blocked", 0),
        "rule_drops": totals.get("rule_drops", 0),
        **({"contained": len(loader.contain.records), "contain_blocked": loader.contain.blocked_total()}
           if loader.contain else {}),
        **({"inbound": {**{k: totals.get(k, 0) for k in ("tcp_syn", "udp", "icmp")},
                        **loader.flows.counts()}} if loader.flows else {}),
        **({"crowdsec": loader.fleet.status()} if loader.fleet else {}),
        **({"stack": loader.stack.totals()} if loader.stack else {}),
    }


def status(loader, running: bool) -> dict:
    """records/loader_status.json: what this loader runs and has in the kernel."""
    return {
        "pid": os.getpid(), "started_at": utc_now_iso(loader.started), "updated_at": utc_now_iso(),
        "running": running, "capture_mode": loader.monitor.mode,
        "capture_fallback_reason": loader.monitor.fallback_reason,
        "interface": loader.opts.interface if loader.enforcer else None,
        # xdp_mode, xdp_native_error, ingress_path, kernel_taint (kernel/ingress.py)
        **(loader.enforcer.ingress_report() if loader.enforcer else {"xdp_mode": None}),
        "cgroup_block": bool(loader.enforcer and loader.enforcer.cgroup_path),
        # What this loader has in the kernel (ids as `bpftool prog show` lists them).
        "programs": {**program_ids(loader.monitor.bpf),
                     **(loader.enforcer.links() if loader.enforcer else {}),
                     # outbound (issue 12); prefixed: it also has a sock:inet_sock_set_state probe
                     **{f"outbound:{k}": v for k, v in
                        program_ids(loader.raw.bpf if loader.raw else None).items()},
                     **(loader.stack.program_ids() if loader.stack else {})},
        "pin_dir": loader.enforcer.pins.path if loader.enforcer else None,
        "stats": stats(loader),
        "records_error": loader.records_error,
        "command_files": cmdfan.status(loader.store.root),  # None: writes counted, not serialised
    }


def startup(loader, mode: str) -> dict:
    """The stream's "startup" event: how capture and enforcement started."""
    return dict(
        capture_mode=mode, capture_fallback_reason=loader.monitor.fallback_reason,
        interface=loader.opts.interface if loader.enforcer else None,
        **(loader.enforcer.ingress_report() if loader.enforcer else {"xdp_mode": None}),
        cgroup_block=bool(loader.enforcer and loader.enforcer.cgroup_path),
        cgroup_path=loader.enforcer.cgroup_path if loader.enforcer else None,
        records=str(loader.store.root), pid=os.getpid(), version=__version__,
        bans_restored=loader.restored[0], rules_restored=loader.restored[1],
        pin_dir=loader.enforcer.pins.path if loader.enforcer else None,
        links_adopted=list(loader.enforcer.adopted) if loader.enforcer else [],
        links_replaced=list(loader.enforcer.replaced) if loader.enforcer else [])
