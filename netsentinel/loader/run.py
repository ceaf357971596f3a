"""The loader's run loop (behind unified_ebpf.py).

Start order: take the interface's lock, open (or create) the pinned maps,
put the saved bans and rules in them, and only then adopt the pinned links
(swapping the program through them if it changed) or attach new ones, so no
program ever sees traffic before the bans are in place; then the connection
monitor. Two loops then run side by side:
- enforcement (its own thread, every POLL_MS): ban and rule commands,
  expiry, CrowdSec, counter sync, and the whitelist as the event path sees
  it. It never waits for events: a connect flood cannot delay a ban.
- events (the main thread): the connection ring buffer in bounded polls
  (kernel/monitor.py), the outbound monitors, one write of the held
  connection events per turn, flows, status and stats.

SIGINT, SIGTERM and SIGHUP end the loop, and with it monitoring, not
protection: the pinned programs and maps stay (kernel/pins.py) and keep
dropping, expiring TTL bans on time, until the next loader adopts them or
`unified_ebpf.py --unload` removes them. Cleanup runs with those signals
blocked, so a second signal cannot cut it short.
"""

from __future__ import annotations

import gc
import signal
import sys
import threading
import time

from .. import logfmt
from . import report, shutdown
from .bantable import BanTable
from . import wake
from .starting import STOP_SIGNALS
from .contain import ContainTable  # process containment (issue 12)
from .enforceloop import POLL_MS, EnforceLoop
from .enforcestart import start_enforcement
from .fleet import Fleet
from ..events import EventWriter
from .flows import FlowFeed
from ..kernel import KernelError
from ..kernel.enforcer import Enforcer
from ..kernel.connevent import RawConnection
from ..kernel.monitor import ConnectionMonitor
from ..kernel.pins import LoaderLock
from .options import LoaderOptions
from .procinfo import ProcCache
from .protect import ProtectedFeed
from ..kernel.outbound import OutboundMonitor  # outbound (issue 12)
from .outbound import Outbound                  # outbound (issue 12)
from .ruletable import RuleTable
from ..records import LOADER_STATUS
from .stack import Stack, start_stack  # issue 17: drop reasons, TCP health (docs/STACK.md)
from ..store import RecordsStore, StoreError
from ..whitelist import WhitelistFile

STATUS_EVERY_S = 2.0
STACK_FAULTS_MAX = 5    # failed stack ticks in a row before stack visibility is turned off
LOCK_WAIT_S = 2.0       # then back to the loop, and try again on the next pass


def warn(msg: str) -> None:
    print(f"unified_ebpf: {msg}", file=sys.stderr, flush=True)


class Loader:
    def __init__(self, opts: LoaderOptions, out=None):
        self.opts = opts
        self.events = EventWriter(out)
        self.store = RecordsStore(opts.records, warn=warn, lock_timeout=LOCK_WAIT_S)
        self._records_lock = self.store.hold_loader_lock()  # one loader per records/; kept open
        self.records_error: str | None = None  # why records/ is unusable right now (status)
        self.whitelist = WhitelistFile(opts.config, warn=warn)
        self._wl = self.whitelist.current()
        self.procs = ProcCache()
        self.monitor = ConnectionMonitor(opts.capture, opts.page_cnt, warn=warn)
        self.monitor.gate = wake.GATE   # steps aside while a command goes in (loader/wake.py)
        self.enforcer = (Enforcer(opts.interface, max_bans=opts.max_bans, cgroup=opts.cgroup,
                                  xdp_mode=opts.xdp_mode, pin_root=opts.pin_dir,
                                  extra_cflags=opts.extra_cflags, warn=warn)
                         if opts.enforce else None)
        self.lock = LoaderLock(self.enforcer.pins) if self.enforcer else None
        self.restored = (0, 0)   # (bans, rules) put back at startup
        self.bans: BanTable | None = None
        self.protected: ProtectedFeed | None = None
        self.rules: RuleTable | None = None
        self.contain: ContainTable | None = None
        self.flows: FlowFeed | None = None
        self.fleet = None
        self.stack: Stack | None = None
        self.stop_reason: str | None = None
        self.started = time.time()
        self.counts = {"events": 0, "lost": 0, "whitelisted": 0, "folded": 0}
        self._cleaned = False
        self._stack_faults = 0   # failed stack ticks in a row
        self._held: list[tuple[str, dict]] | None = []  # events before startup
        self._status_lock = threading.Lock()   # both loops write status
        self._enforcing: EnforceLoop | None = None   # bans, rules, expiry: their own thread
        self._outcomes: list[tuple[str, dict]] | None = None   # during an enforcement pass
        # outbound (issue 12): raw/packet sockets, and signals on connections
        self.raw = OutboundMonitor(warn=warn) if opts.raw_sockets else None
        self.outbound = Outbound(self.procs, self._emit_counted, raw=self.raw,
                                 egress_interval=opts.flow_interval)


    # ----------------------------------------------------------- signals
    def _on_signal(self, signum, _frame) -> None:
        if self.stop_reason is None:
            self.stop_reason = signal.Signals(signum).name
        else:
            warn(f"{signal.Signals(signum).name} again: already stopping")

    # ----------------------------------------------------------- events
    def _on_connection(self, raw: RawConnection) -> None:
        info = self.procs.get(raw.pid, raw.ts_ns, raw.comm, raw.start_ns)
        if info["proc_error"] is None:
            self.monitor.know(raw.pid, raw.start_ns)   # its next connects need not wake the loop
        wl = self._wl   # looked up once per loop turn, not per event (a stat each)
        why = wl.match(daddr=raw.daddr, dport=raw.dport, comm=raw.comm, exe=info["exe"])
        if why is not None:
            self.counts["whitelisted"] += 1
            if not wl.mark_only:
                return
        fields = dict(pid=raw.pid, tid=raw.tid, ppid=info["ppid"], sid=info["sid"],
                      parent_comm=info["parent_comm"], session_leader=info["session_leader"],
                      uid=raw.uid, comm=raw.comm,
                      exe=info["exe"], cmdline=info["cmdline"], proc_error=info["proc_error"],
                      family=raw.family, saddr=raw.saddr, sport=raw.sport, daddr=raw.daddr,
                      dport=raw.dport, mode=raw.mode)
        if raw.count > 1:   # connects the kernel folded while the ring buffer was full
            fields["count"] = raw.count
            fields["window_s"] = round(max(0, raw.last_ns - raw.ts_ns) / 1e9, 3)
            self.counts["folded"] += raw.count - 1
        if why is not None:
            fields["whitelisted"] = why
        self.outbound.connection(fields)  # outbound (issue 12): emits it, with signals

    def _emit_counted(self, type_: str, **fields) -> None:
        """Emit, counting connection events as they are written: a shell's
        connection may be held up to a second (outbound), so the stats
        counter must follow the stream, not the capture."""
        if type_ == "connection":
            self.counts["events"] += 1
            self.events.hold(type_, **fields)   # written once per loop turn (_loop)
        else:
            self.events.emit(type_, **fields)

    def _on_lost(self, n: int) -> None:
        self.counts["lost"] += n
        warn(f"kernel buffer overflow: {n} connection events lost ({self.counts['lost']} in all); "
             "raise --buffer-pages")
        self.events.emit("lost", count=n, total=self.counts["lost"], source="conn_events")

    def emit_outcome(self, type_: str, **fields) -> None:
        """ban/unban/rule outcomes (and refusals, already on stderr)."""
        # One key=value line per decision (docs/SERVICE.md); a refusal's
        # human line came from the table, this is the machine-readable one.
        cmd = fields.get("command") if isinstance(fields.get("command"), dict) else {}
        logfmt.log(type_, "loader", **{k: fields.get(k, cmd.get(k)) for k in (
            "ip", "id", "result", "source", "reason", "expires_at", "error")})
        if self.fleet:
            self.fleet.on_outcome(type_, fields, self.bans)
        if self._held is not None:
            # Restoring bans happens before the startup event is written;
            # hold these so "startup" is always the first line of the stream.
            self._held.append((type_, fields))
        elif self._outcomes is not None:
            # Written when the enforcement pass ends, after banned_ips.json was
            # saved: whoever reads the outcome finds the file agreeing with it.
            self._outcomes.append((type_, fields))
        else:
            self.events.emit(type_, **fields)

    # ----------------------------------------------------------- status
    def stats(self) -> dict:
        return report.stats(self)

    def write_status(self, running: bool) -> None:
        status = report.status(self, running)
        with self._status_lock:
            try:
                self.store.write(LOADER_STATUS, status, lock=False)  # ours alone: never stale
            except StoreError as e:
                warn(str(e))
            if self.stack:
                self.stack.record(self.store)

    # ----------------------------------------------------------- run
    def run(self) -> int:
        if self.lock:
            try:   # before anything else: a refused loader must not touch records/ or the kernel
                self.lock.acquire(f"{self.opts.interface} (pins in {self.enforcer.pins.path})")
            except KernelError as e:
                warn(f"error: {e}")
                return 1
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
        if o.fleet and self.enforcer:  # before the bans come back: it hears their outcomes
            self.fleet = Fleet(o.fleet, self.store, warn)
        elif o.fleet:
            warn("crowdsec: --no-xdp enforces nothing; the LAPI is not followed")
        if self.enforcer:
            start_enforcement(self, warn)
        else:
            warn("monitor only (--no-xdp): nothing is enforced; ban commands stay queued")
        mode = self.monitor.start(self._on_connection, self._on_lost)
        if self.monitor.fallback_reason:
            warn(f"kprobes unavailable: {self.monitor.fallback_reason}; "
                 "falling back to tracepoint sock:inet_sock_set_state")
        warn(f"capture mode: {mode}")
        # outbound (issue 12); after restoring bans: compiling it must not delay them
        if self.raw:
            self.raw.start(self.outbound.raw_socket, lambda n: self.outbound.lost(n, warn),
                           self.outbound.stdio_dup)
            warn("raw/packet sockets watched (syscalls:sys_enter_socket/sys_exit_socket)")
            try:  # monitoring only: without it, raw_socket events still flow
                if self.enforcer and o.interface:
                    self.raw.attach_egress(o.interface)
                    warn(f"raw/packet socket egress counted on {o.interface} (TCX egress)")
            except KernelError as e:
                warn(f"{e}: no egress events (raw_socket events still are reported)")
        if o.stack:   # --- stack visibility (issue 17); after the bans are back in force
            self.stack, notes = start_stack(self.enforcer, o, self.events.emit, warn, self.procs.get)
            self._held += [("warning", {"message": n}) for n in notes]
        self.events.emit("startup", **report.startup(self, mode))
        held, self._held = self._held, None
        for type_, fields in held:
            self.events.emit(type_, **fields)
        warn(f"running; records in {self.store.root}; Ctrl-C to stop")
        self.write_status(True)
        if self.fleet:
            self.fleet.start()
        if self.bans:
            self._enforcing = EnforceLoop(self)
            self._enforcing.start()
        # What startup made (BCC, the compiled programs, restored tables) lives
        # as long as the loader: out of the collector's way, so a full
        # collection walks only what was made since. Every thread waits while
        # one collects (it holds the GIL): under a flood full collections took
        # 77-430 ms of wall time before this, one took 87 ms in a run after.
        gc.freeze()
        self._loop()
        if self._enforcing and self._enforcing.error is not None:
            raise self._enforcing.error
        return 0

    def _records_trouble(self, e: Exception | None) -> None:
        """records/ unusable (lock held, disk full...): say so once, keep the
        loop and enforcement running, try again next pass; say when it is back."""
        msg = None if e is None else f"records/ unusable, retrying: {e}"
        if msg != self.records_error:
            warn(msg or "records/ usable again")
            self.records_error = msg
            self.write_status(True)

    def until_done(self, fn):
        while True:
            try:
                result = fn()
                self._records_trouble(None)
                return result
            except StoreError as e:
                self._records_trouble(e)
                if self.stop_reason is not None:
                    return 0
                time.sleep(0.5)  # a lock wait paces itself; a full disk would not

    def _loop(self) -> None:
        o = self.opts
        now = time.monotonic()
        next_status = now
        next_stats = now + o.stats_interval
        deadline = now + o.duration if o.duration else None
        while self.stop_reason is None:
            if self._enforcing is None:   # monitor only: nobody else reads the whitelist
                self._wl = self.whitelist.current()
            self.monitor.poll(POLL_MS)
            if self.raw:  # outbound (issue 12)
                self.raw.poll(0)
            self.outbound.poll()
            self.events.flush()
            now = time.monotonic()
            if self.flows:
                self.flows.poll(now)
            if self.stack:
                try:
                    self.stack.tick(now)
                    self._stack_faults = 0
                except Exception as e:  # noqa: BLE001 - a stack-visibility fault must not end monitoring
                    self._stack_fault(e)
            if now >= next_status:
                self.write_status(True)
                next_status = now + STATUS_EVERY_S
            if now >= next_stats:
                self.events.emit("stats", **self.stats())
                next_stats = now + o.stats_interval
            if deadline and now >= deadline:
                self.stop_reason = "duration"

    def _stack_fault(self, e: Exception) -> None:
        """Stack visibility failed a tick: said once per fault on stderr and
        the stream; after STACK_FAULTS_MAX in a row it is turned off (its
        programs detached), and connection events and enforcement go on."""
        self._stack_faults += 1
        msg = f"stack visibility: {type(e).__name__}: {str(e)[:200]}"
        if self._stack_faults >= STACK_FAULTS_MAX:
            msg += f"; turned off after {self._stack_faults} failures in a row"
            stack, self.stack = self.stack, None
            try:   # on this thread: two threads freeing BCC tables at once can crash (cleanup())
                stack.stop()
            except Exception as e2:  # noqa: BLE001
                msg += f" (its detach failed too: {e2})"
        warn(msg)
        self.events.emit("warning", message=msg)

    def cleanup(self) -> None:
        shutdown.cleanup(self, warn)
