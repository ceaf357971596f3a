"""The analyzer's main loop: read events, judge each connection with the
rules, hand the unsettled ones to the LLM worker, record every verdict, and
keep records/analyzer_status.json current.

Threads: the reader (caller of run()), LLM workers (worker.py), and one
flusher that writes records/ in batches. The reader never waits for an
LLM or for a records/ write.
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from typing import IO, Callable

from .. import proposals
from ..eventstore.writer import StoreWriter
from ..levels import LEVELS
from ..llm.backends import BackendError, BackendManager
from ..llm.config import LLM_BACKENDS, resolve_model
from ..llm.probe import choose_auto, probe_backend
from ..netinfo import ProtectedCache
from ..records import ANALYZER_STATUS
from ..store import RecordsStore, StoreError
from ..timefmt import utc_now_iso
from ..whitelist import Whitelist, WhitelistFile
from .floods import FloodDetector
from .flowmodel import FlowModel
from .inputs import BadLine, RateLimitedWarn, parse_line
from .rules import RuleEngine
from .settings import CHECK_EVERY, SettingsWatcher
from .sinks import RecordsSink, threat_from
from .verdict import Verdict
from .worker import Job, LLMWorker

FLUSH_EVERY = 0.25
_PROTECTED = ProtectedCache()  # for rule proposals; the sink keeps its own for auto-bans
PROPOSE_EVERY_S = 600.0  # at most one LLM rule proposal per flooding source per this


class Analyzer:
    def __init__(self, store: RecordsStore, settings: SettingsWatcher, engine: RuleEngine,
                 whitelist_file: WhitelistFile | None, *, warn: Callable[[str], None],
                 history: bool = True, status_interval: float = 2.0,
                 events: StoreWriter | None = None):
        self.store = store
        self.settings = settings
        self.engine = engine
        self.whitelist_file = whitelist_file
        self.warn = warn
        self.status_interval = status_interval
        self.started_at = utc_now_iso()
        self.counts = dict.fromkeys(LEVELS, 0)
        self.sources = {"rules": 0, "llm": 0, "rules_fallback": 0}
        self.input = {"lines": 0, "invalid_lines": 0, "connections": 0, "other_events": {}}
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
        self.manager = BackendManager(warn)
        self.worker = LLMWorker(self.llm_cfg, self.manager, self.deliver, warn)
        self.events = events
        self.sink = RecordsSink(store, settings.current, self.whitelist, warn, history, events)
        self._flood_detector: tuple[int, FloodDetector] | None = None
        self._proposed: dict[str, float] = {}
        try:
            self._flow_model: FlowModel | None = FlowModel.load()
        except (OSError, ValueError) as e:
            self._flow_model = None
            warn(f"flow classifier unavailable ({e}); flood thresholds only")
        self._stop = threading.Event()
        self._flusher = threading.Thread(target=self._flush_loop, name="records-flusher",
                                         daemon=True)

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
        self._flusher.start()

    # ------------------------------------------------------------ the loop
    def run(self, stream: IO[bytes]) -> None:
        for line in stream:
            self.handle_line(line)

    def handle_line(self, line: bytes | str) -> None:
        self.input["lines"] += 1
        if not line.strip():
            return
        try:
            ev = parse_line(line)
        except BadLine as e:
            self.input["invalid_lines"] += 1
            self._bad_line_warn(f"input line {self.input['lines']}: {e}; skipped")
            return
        if ev["type"] == "connection":
            self.input["connections"] += 1
            self.handle_connection(ev)
            self.last_event = (ev.get("ts"), time.time())  # the metrics' analyzer lag
        else:
            self.handle_other(ev)

    def handle_connection(self, ev: dict) -> None:
        cfg = self.settings.current()
        self._track_settings(cfg)
        out = self.engine.evaluate(ev, cfg, self.whitelist())
        extra = {"target": out.target, "dedupe_key": out.dedupe_key}
        ask = (self._backend != "rules" and not out.whitelisted
               and not (out.settled and cfg["llm_scope"] == "unsettled"))
        if not ask:
            self.deliver(Job(ev, out.verdict, extra), out.verdict, False)
            return
        history = self.engine.history.recent(ev.get("pid"))[:-1]
        key = (ev.get("exe") or ev.get("comm"), ev["daddr"], ev["dport"])
        self.worker.submit(key, Job(ev, out.verdict, extra, history), cfg)

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
        elif t in ("ban_rejected", "rule_rejected", "warning"):
            self.warn(f"loader {t}: {ev.get('error') or ev.get('message')}")

    # ------------------------------------------------------------- floods
    def floods(self, cfg: dict) -> FloodDetector:
        gen = self.settings.generation
        if self._flood_detector is None or self._flood_detector[0] != gen:
            self._flood_detector = (gen, FloodDetector(cfg["flood_thresholds"], self._flow_model))
        return self._flood_detector[1]

    def handle_flow(self, ev: dict) -> None:
        """An inbound per-source window: a flood becomes a threat (one per
        source and kind), auto-blocked when CRITICAL (auto_block_floods)."""
        if not isinstance(ev.get("src"), str):
            return
        cfg = self.settings.current()
        self._track_settings(cfg)
        v = self.floods(cfg).judge(ev)
        if v is None:
            return
        verdict = {"level": v.level, "category": v.category, "confidence": v.confidence,
                   "reason": v.reason, "verdict_source": "rules", "rule_ids": [f"flood:{v.category}"],
                   "recommended_action": "ban the source" if v.level != "MEDIUM" else "watch the source",
                   "detector": v.source, "model_label": v.model_label,
                   "model_confidence": v.model_confidence}
        entry = RecordsSink.make_entry(ev, verdict, "rules", False)
        threat = threat_from(entry, ev["src"], f"flood|{v.category}|{ev['src']}")
        if threat is not None:
            threat["kind"] = "flood"
        self.sink.add(entry, threat)
        self._tally(v.level, "rules")
        if v.level == "CRITICAL" and cfg["propose_rules_on_flood"] and self._backend in LLM_BACKENDS:
            now = time.monotonic()
            if now - self._proposed.get(ev["src"], -PROPOSE_EVERY_S) >= PROPOSE_EVERY_S:
                self._proposed[ev["src"]] = now
                threading.Thread(target=self._propose_rules, args=(ev, v), daemon=True,
                                 name="rule-proposal").start()

    def _propose_rules(self, ev: dict, v) -> None:
        """Ask the LLM for filter rules against this flood; a person reviews them."""
        cfg = self.llm_cfg()
        wl = self.whitelist()
        try:
            backend = self.manager.get(cfg)
            p = proposals.propose(
                self.store, lambda messages, schema: backend.ask_json(messages, cfg, schema), [ev],
                backend=backend.describe(), protected=_PROTECTED.get(wl.config["protect_ssh_ports"]),
                ssh_ports=wl.config["protect_ssh_ports"], context=v.reason,
                trigger={"kind": "flood", "src": ev["src"], "category": v.category})
        except (proposals.ProposalError, BackendError, StoreError) as e:
            self.warn(f"no rule proposal for the {v.category} from {ev['src']}: {e}")
            return
        valid = sum(r["valid"] for r in p["rules"])
        self.warn(f"rule proposal {p['id']} for the {v.category} from {ev['src']}: {valid} valid "
                  f"rule(s) of {len(p['rules'])}, waiting for review")

    # ---------------------------------------------------------- verdicts
    def deliver(self, job: Job, verdict: Verdict, cached: bool) -> None:
        """Record one final verdict (any thread)."""
        backend = "rules" if verdict.verdict_source == "rules" else self._backend
        entry = RecordsSink.make_entry(job.event, verdict.as_dict(), backend, cached)
        threat = threat_from(entry, job.extra.get("target"), job.extra.get("dedupe_key"))
        self.sink.add(entry, threat)
        self._tally(verdict.level, verdict.verdict_source)

    def _tally(self, level: str, source: str) -> None:
        sec = int(time.monotonic())
        with self._lock:
            self.counts[level] += 1
            self.sources[source] += 1
            if self._per_second and self._per_second[-1][0] == sec:
                self._per_second[-1][1] += 1
            else:
                self._per_second.append([sec, 1])
                while self._per_second and self._per_second[0][0] <= sec - 60:
                    self._per_second.popleft()

    # -------------------------------------------------------------- status
    def status(self, running: bool = True) -> dict:
        cfg = self.settings.current()
        now = int(time.monotonic())
        with self._lock:
            counts = dict(self.counts)
            sources = dict(self.sources)
            per_min = sum(n for s, n in self._per_second if s > now - 60)
        llm = self.worker.snapshot()
        if self._backend == "rules":
            backend_status = self._backend_note
        else:
            backend_status = self.manager.status if self.manager.status != "not started" \
                else f"ready: {self._backend_note}"
        return {
            "pid": os.getpid(), "started_at": self.started_at, "updated_at": utc_now_iso(),
            "running": running,
            "backend": self._backend, "backend_setting": cfg["backend"],
            "backend_status": backend_status,
            "model": resolve_model(cfg, self._backend) if self._backend != "rules" else None,
            "events_total": sum(counts.values()), "events_per_minute": per_min,
            "counts": counts, "verdict_sources": sources, "llm": llm,
            "input": {**self.input, "other_events": dict(self.input["other_events"])},
            "loader": dict(self.loader),
            "threats": {"flushes": self.sink.threats_written, "auto_bans": self.sink.auto_bans,
                        "waiting_to_write": self.sink.pending_threat_batch()},
            "config": {"from_file": self.settings.from_file, "error": self.settings.error,
                       "in_force": cfg},
            "rules_file": str(self.engine.path),
            "event_store": ({**self.events.status(), "rows_dropped_before_store":
                             self.sink.events_dropped} if self.events is not None else None),
        }

    def write_status(self, running: bool = True) -> None:
        try:
            self.store.write(ANALYZER_STATUS, self.status(running))
        except StoreError as e:
            self.warn(f"cannot write {ANALYZER_STATUS}: {e}")

    def _flush_loop(self) -> None:
        next_status = 0.0
        while not self._stop.wait(FLUSH_EVERY):
            self.sink.flush()
            if time.monotonic() >= next_status:
                next_status = time.monotonic() + self.status_interval
                self.write_status()

    # ---------------------------------------------------------------- exit
    def finish(self, drain_seconds: float) -> dict:
        """EOF: settle queued LLM work within drain_seconds, write
        everything, return the final status."""
        abandoned = self.worker.finish(drain_seconds)
        if abandoned:
            self.warn(f"{abandoned} events had no LLM answer within {drain_seconds:g}s of EOF; "
                      "recorded with their rule verdicts")
        self._stop.set()
        if self._flusher.is_alive():
            self._flusher.join(timeout=30)
        self.sink.flush(force=True)
        if self.events is not None:
            self.events.close()
        self._bad_line_warn.flush("input warnings")
        status = self.status(running=False)
        status["finished_at"] = utc_now_iso()
        try:
            self.store.write(ANALYZER_STATUS, status)
        except StoreError as e:
            self.warn(f"cannot write {ANALYZER_STATUS}: {e}")
        return status


def summary_line(status: dict) -> str:
    """The one-line summary printed on stderr at exit."""
    c, llm = status["counts"], status["llm"]
    return (f"{status['events_total']} connections judged "
            f"(CRITICAL {c['CRITICAL']}, HIGH {c['HIGH']}, MEDIUM {c['MEDIUM']}, INFO {c['INFO']}); "
            f"backend {status['backend']}; LLM calls {llm['calls']}, answered {llm['answered']}, "
            f"cache hits {llm['cache_hits']}, coalesced {llm['coalesced']}, "
            f"queue dropped {llm['queue_dropped']}, rate-limited {llm['rate_limited']}, "
            f"failures {llm['failures']}, invalid answers {llm['invalid_answers']}, "
            f"abandoned {llm['abandoned']}; invalid input lines {status['input']['invalid_lines']}; "
            f"loader lost {status['loader']['lost_total']}")
