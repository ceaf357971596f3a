"""The analyzer's main loop: read events, judge each connection with the
rules, hand the unsettled ones (and settled ones with behaviour signals,
asksignals.py) to the LLM worker, record every verdict, and keep
records/analyzer_status.json current.

Threads: the reader (caller of run()), LLM workers (worker.py), and one
flusher that writes records/ in batches. The reader never waits for an
LLM or for a records/ write.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from operator import itemgetter
from typing import Callable

from ..eventstore.process import StoreProcess
from ..levels import LEVELS
from ..llm.backends import BackendManager
from ..llm.config import LLM_BACKENDS, resolve_model
from ..llm.probe import choose_auto, probe_backend
from ..records import ANALYZER_STATUS
from ..store import RecordsStore, StoreError
from ..timefmt import utc_now_iso
from ..whitelist import Whitelist, WhitelistFile
from .evidence import threat_from
from .floods import FloodDetector
from .flowjudge import FlowJudging
from .flowmodel import FlowModel
from .guard import Flusher
from .eventcheck import BadLine
from .inputs import RateLimitedWarn
from .reader import LineReader
from .asksignals import asks_anyway
from .rules import RuleEngine
from .behaviour import Behaviour  # outbound (issue 12)
from .dashcmds import DashboardCommands  # the unprivileged dashboard's commands (issue 11)
from .settings import CHECK_EVERY, SettingsWatcher
from .sinks import RecordsSink, clock
from .status import build_status
from .stackscan import StackScanDetector, record_stack_scans  # issue 17
from .verdict import Verdict
from .prompt import question_key
from .worker import Job, LLMWorker

FLUSH_EVERY = 0.25
_LEVEL, _SOURCE = itemgetter("level"), itemgetter("verdict_source")


class Analyzer(LineReader, FlowJudging):
    def __init__(self, store: RecordsStore, settings: SettingsWatcher, engine: RuleEngine,
                 whitelist_file: WhitelistFile | None, *, warn: Callable[[str], None],
                 history: bool = True, status_interval: float = 2.0,
                 events: StoreProcess | None = None):
        self.store = store
        self.settings = settings
        self.engine = engine
        self.behaviour = Behaviour(engine)  # outbound (issue 12)
        self.whitelist_file = whitelist_file
        self.warn = warn
        self.status_interval = status_interval
        self.started_at = utc_now_iso()
        self.counts = dict.fromkeys(LEVELS, 0)
        self.sources = {"rules": 0, "llm": 0, "rules_fallback": 0}
        self.input = {"lines": 0, "invalid_lines": 0, "handler_errors": 0, "connections": 0,
                      "other_events": {}}
        self.last_event: tuple | None = None
        self.loader = {"lost_total": 0, "last_stats": None, "started": None, "stopped": None}
        self._lock = threading.Lock()
        self._per_second: deque = deque()  # (whole second, delivered count)
        self._bad_line_warn = RateLimitedWarn(warn, 1.0)
        self._lost_warn = RateLimitedWarn(warn, 10.0)
        self._backend = "rules"
        self._backend_note = "not resolved yet"
        self._generation = -1
        self._resolver: threading.Thread | None = None
        self._wl = Whitelist()
        self._wl_next = 0.0
        self.manager = BackendManager(warn, progress=warn)  # progress: loading a local model
        self.worker = LLMWorker(self.llm_cfg, self.manager, self.deliver, warn)
        self.events = events
        self.sink = RecordsSink(store, settings.current, self.whitelist, warn, history, events)
        self.stackscan = StackScanDetector()
        self._flood_detector: tuple[int, FloodDetector] | None = None
        self._proposed: dict[str, float] = {}
        self.init_inbound()   # issue 13: per-source inbound view, auto-ban policy
        self.init_reader()
        try:
            self._flow_model: FlowModel | None = FlowModel.load()
        except (OSError, ValueError) as e:
            self._flow_model = None
            warn(f"flow classifier unavailable ({e}); flood thresholds only")
        # What an unprivileged dashboard asks for, applied on the writer's beat.
        self.dashboard_commands = DashboardCommands(store, whitelist_file, warn, settings.current)
        self.flusher = Flusher(self._flush, self.write_status, self.sink.recording, warn,
                               every=FLUSH_EVERY, status_interval=status_interval)

    def _flush(self) -> bool:
        ok = self.sink.flush()
        self.dashboard_commands.poll()
        return ok

    # ------------------------------------------------------------- settings
    def whitelist(self) -> Whitelist:
        """The whitelist in force, re-checked at most every CHECK_EVERY seconds."""
        now = time.monotonic()
        if now >= self._wl_next and self.whitelist_file is not None:
            self._wl_next = now + CHECK_EVERY
            self._wl = self.whitelist_file.current()
        return self._wl

    def llm_cfg(self) -> dict:
        """The config in force with "backend" resolved (for the workers)."""
        return dict(self.settings.current(), backend=self._backend)

    def _track_settings(self, cfg: dict, wait: bool = False) -> None:
        gen = self.settings.generation
        if gen == self._generation:
            return
        self._generation = gen
        wanted = cfg["backend"]
        if wanted == "auto":
            # Probing may take a moment: never on the reader's time, except at start.
            t = threading.Thread(target=self._resolve_auto, args=(cfg,), daemon=True)
            self._resolver = t
            t.start()
            if wait:
                t.join()
            return
        if wanted in LLM_BACKENDS:
            self._backend, self._backend_note = wanted, f"{wanted} {resolve_model(cfg, wanted)}"
            if wanted != "huggingface":  # a local model has nothing to reach
                threading.Thread(target=self._probe, args=(cfg,), daemon=True).start()
        else:
            self._backend, self._backend_note = "rules", "rules only (--backend rules)"

    def _probe(self, cfg: dict) -> None:
        """Say at once (not at the first failed call) when a chosen backend is unusable."""
        ok, msg = probe_backend(cfg, timeout=3)
        if not ok:
            self.warn(f"{msg}; rule verdicts stand in until it answers")

    def _resolve_auto(self, cfg: dict) -> None:
        name, why = choose_auto(cfg)
        if (name, why) != (self._backend, self._backend_note):
            self.warn(f"backend auto -> {name}: {why}" if name != "rules" else why)
        self._backend, self._backend_note = name, why

    def start(self) -> None:
        self._track_settings(self.settings.current(), wait=True)
        self.flusher.start()

    # ------------------------------------------------------------ the loop
    # run(), handle_block() and handle_line() are reader.LineReader's.
    def handle_connection(self, ev: dict) -> None:
        """One connection event alone (the loop judges blocks of them)."""
        cfg = self.settings.current()
        self._track_settings(cfg)
        self._block_ts = clock()
        try:
            self.judge_connection(ev, cfg, self.whitelist())
        finally:
            self.record_batch()

    def judge_connection(self, ev: dict, cfg: dict, wl: Whitelist) -> None:
        self._dests.append(ev)   # the inbound view learns it with the batch
        out = self.engine.evaluate(ev, cfg, wl)
        asking, signals = self._backend != "rules" and not out.whitelisted, {}
        if asking and out.settled and cfg["llm_scope"] == "unsettled":
            # A port rule settled it, but what the process does may say ask anyway.
            signals = asks_anyway(ev, out.verdict.level)
            asking = bool(signals)
        if not asking:   # the rules' verdict is final (most events): no Job to carry
            self.keep(ev, out.verdict, out.target, out.dedupe_key, out.targets)
            return
        self.record_batch()   # a cached answer is delivered at once: after the batch
        extra = {"target": out.target, "dedupe_key": out.dedupe_key, "targets": out.targets}
        history = self.engine.history.recent(ev.get("pid"))[:-1]
        key = question_key(ev, out.verdict.asked(), history)  # what the model would see
        self.worker.submit(key, Job(ev, out.verdict, extra, history, signals), cfg)

    def handle_other(self, ev: dict) -> None:
        t = ev["type"]
        other = self.input["other_events"]
        other[t] = other.get(t, 0) + 1
        if t == "lost":
            count = ev.get("count") if isinstance(ev.get("count"), int) else 0
            self.loader["lost_total"] += count
            self._lost_warn(f"the loader lost {count} events (kernel buffer overflow; "
                            f"{self.loader['lost_total']} so far): raise its --buffer-pages")
        elif t == "stats":
            self.loader["last_stats"] = {k: v for k, v in ev.items() if k not in ("v", "type")}
        elif t == "startup":
            self.loader["started"] = ev["ts"]
        elif t == "shutdown":
            self.loader["stopped"] = ev["ts"]
        elif t == "flow":
            self.handle_flow(ev)
        elif t == "accepts":
            self.handle_accepts(ev)
        elif t == "tcp_health":
            self.inbound.on_tcp_health(ev)
        elif t == "flow_aggregate":
            self.handle_aggregate(ev)
        elif t in ("raw_socket", "egress", "udp"):  # outbound (issue 12): rules only, no LLM
            try:
                out = self.behaviour.judge(ev, self.settings.current())
            except BadLine as e:
                self.input["invalid_lines"] += 1
                self._bad_line_warn(f"input line {self.input['lines']}: {e}; skipped")
                return
            if out is not None:
                self.deliver(Job(ev, out.verdict, {"target": out.target, "dedupe_key": out.dedupe_key}),
                             out.verdict, False)
        elif t == "drops":
            record_stack_scans(self.stackscan, ev, self.sink, self._tally, self._bad_line_warn)
        elif t in ("ban_rejected", "rule_rejected", "contain_rejected", "warning"):
            self.warn(f"loader {t}: {ev.get('error') or ev.get('message')}")

    # ---------------------------------------------------------- verdicts
    def deliver(self, job: Job, verdict: Verdict, cached: bool) -> None:
        """Record one final verdict (any thread)."""
        self._record(job.event, verdict, cached, job.extra.get("target"), job.extra.get("dedupe_key"),
                     job.rule.confidence, job.extra.get("targets", ()))

    def _record(self, ev: dict, verdict: Verdict, cached: bool, target, dedupe_key,
                rule_confidence: float, targets) -> None:
        backend = "rules" if verdict.verdict_source == "rules" else self._backend
        entry = RecordsSink.make_entry(ev, verdict, backend, cached)
        self.sink.add(entry, threat_from(entry, target, dedupe_key, rule_confidence, targets))
        self._tally(verdict.level, verdict.verdict_source)

    def _tally(self, level: str, source: str) -> None:
        self._count(1, ((level, 1),), ((source, 1),))

    def _tally_many(self, entries: list) -> None:
        """_tally for a batch of recorded entries (one lock, one clock read,
        the levels and sources counted in C)."""
        self._count(len(entries), Counter(map(_LEVEL, entries)).items(),
                    Counter(map(_SOURCE, entries)).items())

    def _count(self, n: int, levels, sources) -> None:
        sec = int(time.monotonic())
        with self._lock:
            for level, k in levels:
                self.counts[level] += k
            for source, k in sources:
                self.sources[source] += k
            if self._per_second and self._per_second[-1][0] == sec:
                self._per_second[-1][1] += n
            else:
                self._per_second.append([sec, n])
                while self._per_second and self._per_second[0][0] <= sec - 60:
                    self._per_second.popleft()

    # -------------------------------------------------------------- status
    def status(self, running: bool = True) -> dict:
        return build_status(self, running)

    def write_status(self, running: bool = True) -> None:
        try:
            self.store.write(ANALYZER_STATUS, self.status(running))
        except (StoreError, OSError, ValueError) as e:
            self.warn(f"cannot write {ANALYZER_STATUS}: {e}")

    # ---------------------------------------------------------------- exit
    def finish(self, drain_seconds: float) -> dict:
        """EOF: settle queued LLM work within drain_seconds, write
        everything, return the final status."""
        abandoned = self.worker.finish(drain_seconds)
        if abandoned:
            self.warn(f"{abandoned} events had no LLM answer within {drain_seconds:g}s of EOF; "
                      "recorded with their rule verdicts")
        self.flusher.join(timeout=30)
        self.sink.flush(force=True)
        if self.events is not None:
            self.events.close()
        self._bad_line_warn.flush("input warnings")
        status = self.status(running=False)
        status["finished_at"] = utc_now_iso()
        try:
            self.store.write(ANALYZER_STATUS, status)
        except (StoreError, OSError, ValueError) as e:
            self.warn(f"cannot write {ANALYZER_STATUS}: {e}")
        return status
