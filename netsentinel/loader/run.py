"""The loader's run loop (behind unified_ebpf.py).

Attaches enforcement first (so restored bans hold from the first packet),
then the connection monitor; polls the perf buffer in short slices and,
between them, applies ban commands, expires bans, syncs counters and writes
status. SIGINT, SIGTERM and SIGHUP end the loop; cleanup then runs with
those signals blocked, so a second signal cannot leave a half-detached state.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from dataclasses import dataclass, field

from .. import __version__
from .bantable import BanTable
from .crowdsec import FleetOptions
from .fleet import Fleet
from ..events import EventWriter
from .flows import FlowTracker
from ..kernel import KernelError
from ..kernel.enforcer import Enforcer
from ..kernel.libbpf import program_ids
from ..kernel.monitor import ConnectionMonitor, RawConnection
from .procinfo import ProcCache
from .ruletable import RuleTable
from .stack import Stack, start_stack  # issue 17: drop reasons, TCP health (docs/STACK.md)
from ..records import LOADER_STATUS
from ..store import RecordsStore, StoreError
from ..timefmt import utc_now_iso
from ..whitelist import WhitelistFile

POLL_MS = 50            # ban commands are picked up within ~this
COMMAND_RESCAN_S = 1.0  # re-read the queue even if its stat did not change
STATUS_EVERY_S = 2.0
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def warn(msg: str) -> None:
    print(f"unified_ebpf: {msg}", file=sys.stderr, flush=True)


@dataclass
class LoaderOptions:
    records: str
    config: str
    interface: str | None
    enforce: bool = True
    cgroup: bool = True
    xdp_mode: str = "auto"
    capture: str = "auto"
    bans: list[str] = field(default_factory=list)
    max_bans: int = 1048576
    page_cnt: int = 64
    stats_interval: float = 10.0
    flow_interval: float = 1.0
    flow_top: int = 5
    flow_pps_threshold: float = 1000.0
    duration: float | None = None
    fleet: FleetOptions | None = None   # CrowdSec LAPI (docs/FLEET.md)
    stack: bool = True                  # drop reasons (docs/STACK.md)
    stack_interval: float = 2.0


class Loader:
    def __init__(self, opts: LoaderOptions, out=None):
        self.opts = opts
        self.events = EventWriter(out)
        self.store = RecordsStore(opts.records, warn=warn)
        self.whitelist = WhitelistFile(opts.config, warn=warn)
        self.procs = ProcCache()
        self.monitor = ConnectionMonitor(opts.capture, opts.page_cnt, warn=warn)
        self.enforcer = (Enforcer(opts.interface, max_bans=opts.max_bans, cgroup=opts.cgroup,
                                  xdp_mode=opts.xdp_mode, warn=warn) if opts.enforce else None)
        self.bans: BanTable | None = None
        self.rules: RuleTable | None = None
        self.flows: FlowTracker | None = None
        self.fleet = None
        self.stack: Stack | None = None
        self.stop_reason: str | None = None
        self.started = time.time()
        self.counts = {"events": 0, "lost": 0, "whitelisted": 0}
        self._cleaned = False
        self._held: list[tuple[str, dict]] | None = []  # events before startup


    # ----------------------------------------------------------- signals
    def _on_signal(self, signum, _frame) -> None:
        if self.stop_reason is None:
            self.stop_reason = signal.Signals(signum).name
        else:
            warn(f"{signal.Signals(signum).name} again: already stopping")

    # ----------------------------------------------------------- events
    def _on_connection(self, raw: RawConnection) -> None:
        info = self.procs.get(raw.pid)
        why = self.whitelist.current().match(daddr=raw.daddr, dport=raw.dport, comm=raw.comm,
                                             exe=info["exe"])
        if why is not None:
            self.counts["whitelisted"] += 1
            if not self.whitelist.current().mark_only:
                return
        self.counts["events"] += 1
        fields = dict(pid=raw.pid, tid=raw.tid, ppid=info["ppid"], uid=raw.uid, comm=raw.comm,
                      exe=info["exe"], cmdline=info["cmdline"], proc_error=info["proc_error"],
                      family=raw.family, saddr=raw.saddr, sport=raw.sport, daddr=raw.daddr,
                      dport=raw.dport, mode=raw.mode)
        if why is not None:
            fields["whitelisted"] = why
        self.events.emit("connection", **fields)

    def _on_lost(self, n: int) -> None:
        self.counts["lost"] += n
        warn(f"kernel buffer overflow: {n} connection events lost ({self.counts['lost']} in all); "
             "raise --buffer-pages")
        self.events.emit("lost", count=n, total=self.counts["lost"], source="conn_events")

    def emit_outcome(self, type_: str, **fields) -> None:
        """ban/unban/rule outcomes (and refusals, already on stderr)."""
        if not type_.endswith("_rejected"):
            warn(f"{type_} {fields.get('ip') or fields.get('id')}: {fields.get('result')}")
        if self.fleet:
            self.fleet.on_outcome(type_, fields, self.bans)
        if self._held is not None:
            # Restoring bans happens before the startup event is written;
            # hold these so "startup" is always the first line of the stream.
            self._held.append((type_, fields))
        else:
            self.events.emit(type_, **fields)

    # ----------------------------------------------------------- status
    def stats(self) -> dict:
        totals = self.enforcer.totals() if self.enforcer and self.enforcer.bpf else {}
        return {
            "uptime_s": round(time.time() - self.started, 3),
            **self.counts,
            "bans_active": len(self.bans.bans) if self.bans else 0,
            "drops_total": totals.get("xdp_drops", 0),
            "blocked_connects": totals.get("connect_blocked", 0) + totals.get("sendmsg_blocked", 0),
            "rule_drops": totals.get("rule_drops", 0),
            **({"crowdsec": self.fleet.status()} if self.fleet else {}),
            **({"stack": self.stack.totals()} if self.stack else {}),
        }

    def write_status(self, running: bool) -> None:
        status = {
            "pid": os.getpid(), "started_at": utc_now_iso(self.started), "updated_at": utc_now_iso(),
            "running": running, "capture_mode": self.monitor.mode,
            "capture_fallback_reason": self.monitor.fallback_reason,
            "interface": self.opts.interface if self.enforcer else None,
            "xdp_mode": self.enforcer.xdp_mode if self.enforcer else None,
            "cgroup_block": bool(self.enforcer and self.enforcer.cgroup_path),
            # What this loader has in the kernel (ids as `bpftool prog show` lists them).
            "programs": {**program_ids(self.monitor.bpf),
                         **program_ids(self.enforcer.bpf if self.enforcer else None),
                         **(self.stack.program_ids() if self.stack else {})},
            "stats": self.stats(),
        }
        try:
            self.store.write(LOADER_STATUS, status)
        except StoreError as e:
            warn(str(e))
        if self.stack:
            self.stack.record(self.store)

    # ----------------------------------------------------------- run
    def run(self) -> int:
        for s in STOP_SIGNALS:
            signal.signal(s, self._on_signal)
        try:
            return self._run()
        except KernelError as e:
            warn(f"error: {e}")
            return 1
        finally:
            self.cleanup()

    def _run(self) -> int:
        o = self.opts
        if self.enforcer:
            self.enforcer.attach()
            if self.enforcer.xdp_mode:
                warn(f"XDP filter attached to {o.interface} ({self.enforcer.xdp_mode} mode)")
            if self.enforcer.cgroup_path:
                warn(f"connect/sendmsg blocks attached at cgroup2 root {self.enforcer.cgroup_path}")
            self.bans = BanTable(self.store, self.enforcer, self.whitelist, self.emit_outcome, warn)
            self.rules = RuleTable(
                self.store, self.enforcer, self.bans.protected,
                lambda: self.whitelist.current().config["protect_ssh_ports"], self.emit_outcome, warn)
            if self.enforcer.xdp_mode:
                self.flows = FlowTracker(self.enforcer.read_flows, top_n=o.flow_top,
                                         pps_threshold=o.flow_pps_threshold)
        else:
            warn("monitor only (--no-xdp): nothing is enforced; ban commands stay queued")
        mode = self.monitor.start(self._on_connection, self._on_lost)
        if self.monitor.fallback_reason:
            warn(f"kprobes unavailable: {self.monitor.fallback_reason}; "
                 "falling back to tracepoint sock:inet_sock_set_state")
        warn(f"capture mode: {mode}")
        if o.fleet and self.bans:
            self.fleet = Fleet(o.fleet, self.store, warn)
        elif o.fleet:
            warn("crowdsec: --no-xdp enforces nothing; the LAPI is not followed")
        restored = self.bans.restore() if self.bans else 0
        rules_restored = self.rules.restore() if self.rules else 0
        for ip in o.bans:
            self.bans.ban_now({"action": "ban", "ip": ip, "reason": "--ban at startup", "source": "cli"})
        if o.stack:   # --- stack visibility (issue 17); after the bans are back in force
            self.stack, notes = start_stack(self.enforcer, o, self.events.emit, warn, self.procs.get)
            self._held += [("warning", {"message": n}) for n in notes]
        self.events.emit(
            "startup", capture_mode=mode, capture_fallback_reason=self.monitor.fallback_reason,
            interface=o.interface if self.enforcer else None,
            xdp_mode=self.enforcer.xdp_mode if self.enforcer else None,
            cgroup_block=bool(self.enforcer and self.enforcer.cgroup_path),
            cgroup_path=self.enforcer.cgroup_path if self.enforcer else None,
            records=str(self.store.root), pid=os.getpid(), version=__version__,
            bans_restored=restored, rules_restored=rules_restored)
        held, self._held = self._held, None
        for type_, fields in held:
            self.events.emit(type_, **fields)
        warn(f"running; records in {self.store.root}; Ctrl-C to stop")
        self.write_status(True)
        if self.fleet:
            self.fleet.start()
        self._loop()
        return 0

    def _loop(self) -> None:
        o = self.opts
        now = time.monotonic()
        next_scan = next_status = now
        next_stats = now + o.stats_interval
        next_flows = now
        deadline = now + o.duration if o.duration else None
        while self.stop_reason is None:
            self.monitor.poll(POLL_MS)
            now = time.monotonic()
            if self.bans:
                rescan = now >= next_scan
                if self.bans.commands_changed() or rescan:
                    self.bans.process_commands()
                self.bans.expire()
                if self.fleet:
                    self.fleet.poll(self.bans)
            if self.rules:
                if self.rules.queue.changed() or rescan:
                    self.rules.process_commands()
                self.rules.expire()
                if rescan:
                    next_scan = now + COMMAND_RESCAN_S
            if self.flows and now >= next_flows:
                for body in self.flows.sample():
                    self.events.emit("flow", **body)
                next_flows = now + o.flow_interval
            if self.stack:
                self.stack.tick(now)
            if now >= next_status:
                if self.bans:
                    self.bans.sync_counters()
                    self.rules.sync_hits()
                self.write_status(True)
                next_status = now + STATUS_EVERY_S
            if now >= next_stats:
                self.events.emit("stats", **self.stats())
                next_stats = now + o.stats_interval
            if deadline and now >= deadline:
                self.stop_reason = "duration"

    def cleanup(self) -> None:
        """Detach everything, once; stop signals are held off meanwhile."""
        if self._cleaned:
            return
        self._cleaned = True
        self.events.closing = True
        old = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        try:
            try:
                if self.bans:
                    self.bans.sync_counters(limit=None)
            except Exception as e:  # counters are a nicety; detaching is not
                warn(f"could not save final counters: {e}")
            if self.fleet:
                self.fleet.stop()
            stack_detach = self.stack.stop_async() if self.stack else None
            self.monitor.stop()
            if self.enforcer:
                self.enforcer.detach()
            if stack_detach:
                stack_detach.join()
            self.write_status(False)
            self.events.emit("shutdown", message=f"stopped ({self.stop_reason or 'error'}); "
                             "all programs detached")
            warn(f"stopped ({self.stop_reason or 'error'}); all programs detached")
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)
