"""Stack visibility in the loader (issue 17, docs/STACK.md): the one object
run.py holds. It starts the kernel probe, emits `drops` (drops.py) and
`tcp_health` (tcphealth.py) events every interval, and keeps a bounded
summary in records/stack.json for the dashboard's Stack page, with the
per-flow paths (path.py).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Callable

from ..kernel.libbpf import program_ids
from ..records import STACK
from ..store import RecordsStore, StoreError
from ..timefmt import utc_now_iso
from .drops import DropReporter
from .fullqueues import FullQueues
from ..netinfo import local_addresses
from .path import Paths
from .tcphealth import Accepts, TcpHealth

HISTORY_INTERVALS = 180     # drop reasons over time: the last this many intervals with drops
TOP_SITES = 30
TCP_ROWS = 200              # most recently reported connections
DROP_FLOWS = 100            # the biggest dropped flows since start (investigation views)
TOP_QUEUES = 20             # sockets with a full receive queue per `drops` event


def _biggest(rows: dict[tuple, dict], shown: int) -> dict[tuple, dict]:
    """Past four times what is shown, keep the biggest twice that; small ones are noise."""
    if len(rows) <= 4 * shown:
        return rows
    return dict(sorted(rows.items(), key=lambda kv: -kv[1]["count"])[:2 * shown])


class Stack:
    def __init__(self, emit: Callable[..., None], warn: Callable[[str], None], proc_info,
                 interval_s: float, xdp_drops: Callable[[], int] | None = None,
                 xdp_mode: str | None = None, xdp_ifname: str | None = None, path: bool = True):
        self.emit, self.warn, self.interval_s = emit, warn, interval_s
        self.drops = DropReporter(emit, warn, xdp_drops=xdp_drops, xdp_mode=xdp_mode,
                                  xdp_ifname=xdp_ifname)
        self.drops.probe.want_path = path
        self.proc_info = proc_info
        self.tcp: TcpHealth | None = None
        self.accepts: Accepts | None = None
        self.paths: Paths | None = None
        self.queues: FullQueues | None = None
        self._next = self._last = time.monotonic()
        self.history: deque = deque(maxlen=HISTORY_INTERVALS)
        self.sites: dict[tuple, dict] = {}
        self.drop_flows: dict[tuple, dict] = {}
        self.started_at = utc_now_iso()
        self._rcvq: int | None = None
        self.connections: dict[tuple, dict] = {}

    def start(self) -> list[str]:
        """Attach. Returns the warnings to put on the stream (a part that this
        kernel cannot do is off, and says why); raises nothing: visibility is
        not enforcement, the loader goes on without it."""
        if not self.drops.start():
            return [f"stack: {self.drops.off_reason}"]
        probe = self.drops.probe
        notes = [r for r in (probe.detail_off_reason, probe.tcp_off_reason, probe.path_off_reason,
                             probe.accept_off_reason, probe.rcvq_off_reason) if r]
        if probe.path_off_reason is None:
            self.paths = Paths(probe.read_path)
        if probe.rcvq_off_reason is None:
            self.queues = FullQueues(probe.read_rcvq, self.proc_info)
        if self.drops.probe.tcp_off_reason is None:
            self.tcp = TcpHealth(self.drops.probe.read_tcp_light, self.proc_info, netns=self.drops.netns,
                                 details=self.drops.probe.tcp_details)
            self.accepts = Accepts(self.drops.probe.read_accepts,
                                   lambda: {str(n.network_address) for n in local_addresses()})
        return notes

    @property
    def running(self) -> bool:
        return self.drops.probe.bpf is not None

    def tick(self, now: float) -> None:
        if now < self._next:
            return
        # A drop lands in the socket map and the site map a moment apart, so
        # a socket's rows may come an interval after its drops: they get an
        # event of their own then. This namespace's sockets first.
        queues = self.queues.sample(utc_now_iso()) if self.queues else []
        queues.sort(key=lambda q: q["netns"] != self.drops.netns)
        body = self.drops.sample(now - self._last, keep_empty=bool(queues))
        if body:
            body["full_queues"] = queues[:TOP_QUEUES]
            ev = self.emit("drops", **body)
            self._remember_drops(ev or body)
        accepted = self.accepts.sample(now - self._last) if self.accepts else None
        if accepted:
            self.emit("accepts", **accepted)
        if self.paths:
            self.paths.sample()
        for body in (self.tcp.sample() if self.tcp else ()):
            self.emit("tcp_health", **body)
            key = (body["saddr"], body["sport"], body["daddr"], body["dport"])
            self.connections.pop(key, None)
            self.connections[key] = body
            while len(self.connections) > TCP_ROWS:   # another namespace's oldest first
                self.connections.pop(next((k for k, c in self.connections.items()
                                           if c.get("netns") != self.drops.netns), next(iter(self.connections))))
        self._last, self._next = now, now + self.interval_s

    def _remember_drops(self, ev: dict) -> None:
        self.history.append({"ts": ev.get("ts") or utc_now_iso(), "total": ev["total"],
                             "reasons": ev["reasons"], "xdp_added": ev["xdp"]["added"]})
        for s in ev["sites"]:
            key = (s["reason"], s["location"], s["ifname"])
            row = self.sites.setdefault(key, {"reason": s["reason"], "location": s["location"],
                                              "ifname": s["ifname"], "xdp": s["xdp"], "count": 0})
            row["count"] += s["count"]
        self.sites = _biggest(self.sites, TOP_SITES)
        ts = ev.get("ts") or utc_now_iso()
        for f in ev["flows"]:
            key = (f["reason"], f["family"], f["proto"], f["src"], f["dst"], f["dport"])
            row = self.drop_flows.setdefault(key, {k: f[k] for k in ("reason", "family", "proto", "src", "dst",
                                                                    "dport")} | {"count": 0})
            row["count"] += f["count"]
            row["last_seen"] = ts
        self.drop_flows = _biggest(self.drop_flows, DROP_FLOWS)

    def program_ids(self) -> dict[str, int]:
        # "stack/": its set_state program has the connection monitor's name.
        return {f"stack/{n}": i for n, i in program_ids(self.drops.probe.bpf).items()}

    def totals(self) -> dict:
        if self.running:   # the last count stays for the final stack.json, written after stop
            self._rcvq = self.drops.probe.read_rcvq_full()
        rcvq = self._rcvq
        return {**self.drops.totals, **(self.tcp.totals if self.tcp else {}),
                **({"rcvqueue_full": rcvq} if rcvq is not None else {}),
                **(self.accepts.totals if self.accepts else {}),
                **(self.paths.totals if self.paths else {}),
                **(self.queues.totals if self.queues else {})}

    def record(self, store: RecordsStore) -> None:
        """records/stack.json: what the Stack page shows."""
        doc = {"updated_at": utc_now_iso(), "started_at": self.started_at, "interval_s": self.interval_s,
               "netns": self.drops.netns,
               "detail_off_reason": self.drops.probe.detail_off_reason,
               "tcp_off_reason": self.drops.probe.tcp_off_reason,
               "path_off_reason": self.drops.probe.path_off_reason,
               "accept_off_reason": self.drops.probe.accept_off_reason,
               "rcvq_off_reason": self.drops.probe.rcvq_off_reason,
               "totals": self.totals(), "history": list(self.history),
               "sites": sorted(self.sites.values(), key=lambda r: -r["count"])[:TOP_SITES],
               "drop_flows": sorted(self.drop_flows.values(), key=lambda r: -r["count"])[:DROP_FLOWS],
               "connections": list(self.connections.values()),
               "paths": self.paths.snapshot() if self.paths else [],
               "full_queues": self.queues.snapshot() if self.queues else []}
        try:
            store.write(STACK, doc, compact=True)   # C encoder: indent=2 cost 0.2 s a write (issue 19)
        except Exception as e:  # noqa: BLE001 (a display file must never stop the loader)
            self.warn(f"{STACK}: {type(e).__name__}: {e}" if not isinstance(e, StoreError) else str(e))

    def stop(self) -> None:
        self.drops.stop()

    def stop_async(self) -> threading.Thread:
        """Detach in the background, overlapping the loader's other detaches
        (join it before exiting)."""
        t = threading.Thread(target=self.stop, name="stack-detach")
        t.start()
        return t


def start_stack(enforcer, opts, emit, warn, proc_info) -> tuple[Stack | None, list[str]]:
    """The loader's Stack, started (None if it could not be), and the
    warnings for the event stream (already said on stderr)."""
    e = enforcer if enforcer and enforcer.xdp_mode else None
    stack = Stack(emit, warn, proc_info, opts.stack_interval,
                  xdp_drops=(lambda: e.totals().get("xdp_drops", 0)) if e else None,
                  xdp_mode=e.xdp_mode if e else None, xdp_ifname=opts.interface if e else None,
                  path=opts.stack_path)
    notes = stack.start()
    for note in notes:
        warn(note)
    return (stack if stack.running else None), notes
