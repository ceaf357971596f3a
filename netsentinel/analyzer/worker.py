"""LLM calls off the event path.

The reader thread only ever does O(1) work here: a cache lookup, joining
an identical question already waiting, or appending to a bounded queue.
Worker threads make the calls. Whatever happens (full queue, rate cap,
timeout, error, invalid answer, exit), every submitted event gets exactly
one verdict through `deliver`, and every drop is counted.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Callable

from ..events import scrub_value
from ..llm.backends import BackendError, BackendManager
from ..metrics import LLM_SECONDS
from .prompt import build_messages
from .verdict import VERDICT_SCHEMA, InvalidVerdict, Verdict, combine, fallback, parse_llm_verdict

CACHE_MAX = 50000
COALESCE_MAX = 1000   # events waiting on one question; more get their rule verdict at once


@dataclass
class Job:
    """One event waiting for its verdict."""
    event: dict
    rule: Verdict
    extra: dict                 # carried through to deliver (target, dedupe key, ...)
    history: list = field(default_factory=list)
    signals: dict = field(default_factory=dict)  # behaviour signals that asked about a settled event


@dataclass
class _Question:
    key: tuple
    jobs: list
    enqueued: float


class RateCap:
    """At most N calls in any 60-second window."""

    def __init__(self):
        self._times: deque = deque()

    def try_acquire(self, per_minute: int, now: float) -> bool:
        while self._times and self._times[0] <= now - 60:
            self._times.popleft()
        if len(self._times) >= per_minute:
            return False
        self._times.append(now)
        return True


class LLMWorker:
    COUNTERS = ("submitted", "calls", "answered", "cache_hits", "coalesced", "queue_dropped",
                "failures", "timeouts", "invalid_answers", "rate_limited", "stale", "abandoned",
                "cache_evictions", "coalesce_dropped", "worker_restarts", "worker_errors",
                "asked_on_signals")

    def __init__(self, get_cfg: Callable[[], dict], manager: BackendManager,
                 deliver: Callable[[Job, Verdict, bool], None], warn: Callable[[str], None]):
        self.get_cfg = get_cfg        # the config in force, backend already resolved
        self.manager = manager
        self.deliver = deliver        # deliver(job, verdict, cached)
        self.warn = warn
        self.counts = dict.fromkeys(self.COUNTERS, 0)
        self._cond = threading.Condition()
        self._queue: deque = deque()
        self._pending: dict[tuple, _Question] = {}   # queued or in flight, by question
        self._cache: OrderedDict = OrderedDict()      # key -> (expires, llm verdict dict)
        self._rate = RateCap()
        self._threads: list[threading.Thread] = []
        self._in_flight = 0
        self._closing = False
        self._last_failure_warning = 0.0

    # ------------------------------------------------------------ event path
    def submit(self, key: tuple, job: Job, cfg: dict) -> None:
        now = time.monotonic()
        verdict = None
        with self._cond:
            self.counts["submitted"] += 1
            if job.signals:
                self.counts["asked_on_signals"] += 1
            self._ensure_workers(cfg["workers"])
            hit = self._cache.get(key)
            if hit is not None and hit[0] > now:
                self.counts["cache_hits"] += 1
                verdict = combine(job.rule, hit[1])
            elif key in self._pending and len(self._pending[key].jobs) < COALESCE_MAX:
                self._pending[key].jobs.append(job)
                self.counts["coalesced"] += 1
                return
            elif key in self._pending:
                self.counts["coalesce_dropped"] += 1
                verdict = fallback(job.rule, f"{COALESCE_MAX} identical questions already waiting")
            elif len(self._queue) >= cfg["queue_size"] or self._closing:
                self.counts["queue_dropped"] += 1
                verdict = fallback(job.rule, f"LLM queue full ({cfg['queue_size']}); dropped")
            else:
                self._pending[key] = _Question(key, [job], now)
                self._queue.append(key)
                self._cond.notify()
                return
        self.deliver(job, verdict, verdict.verdict_source == "llm")

    # --------------------------------------------------------------- workers
    def _ensure_workers(self, n: int) -> None:
        # Grows only: a lowered "workers" setting leaves idle threads, harmless.
        # A thread that died anyway (it should not: _run catches everything)
        # is replaced, and counted.
        alive = [t for t in self._threads if t.is_alive()]
        if len(alive) != len(self._threads) and not self._closing:
            self.counts["worker_restarts"] += len(self._threads) - len(alive)
            self._threads = alive
        while len(self._threads) < n:
            t = threading.Thread(target=self._run, name=f"llm-worker-{len(self._threads)}",
                                 daemon=True)
            self._threads.append(t)
            t.start()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue:
                    if self._closing:
                        return
                    self._cond.wait(0.5)
                key = self._queue.popleft()
                q = self._pending.get(key)
                if q is None:
                    continue
                self._in_flight += 1
            try:
                llm, why = self._answer(q)
            except Exception as e:  # noqa: BLE001 (a worker outlives any answer)
                self._count("failures")
                llm, why = None, f"LLM worker error: {type(e).__name__}: {' '.join(str(e).split())[:200]}"
            finally:
                with self._cond:
                    self._in_flight -= 1
            try:
                self._settle(key, llm, why)
            except Exception as e:  # noqa: BLE001
                self._count("worker_errors")
                self.warn(f"LLM worker: cannot record a verdict ({type(e).__name__}: {e}); going on")

    def _answer(self, q: _Question) -> tuple[dict | None, str | None]:
        cfg = self.get_cfg()
        now = time.monotonic()
        waited = now - q.enqueued
        if waited > 2 * cfg["timeout_seconds"]:
            self._count("stale")
            return None, f"waited {waited:.1f}s in the LLM queue; too late to ask"
        with self._cond:
            allowed = self._rate.try_acquire(cfg["max_calls_per_minute"], now)
        if not allowed:
            self._count("rate_limited")
            return None, f"LLM rate cap reached ({cfg['max_calls_per_minute']} calls/min)"
        job = q.jobs[0]
        messages = build_messages(job.event, job.rule.asked(), job.history)
        try:
            backend = self.manager.get(cfg)
            self._count("calls")
            started = time.monotonic()
            try:
                text = backend.ask(messages, cfg, VERDICT_SCHEMA)
            finally:
                LLM_SECONDS.observe(time.monotonic() - started)
            # A model's text may hold anything, "\ud800" included: make it
            # writable once, here, before it reaches records/.
            llm = scrub_value(parse_llm_verdict(text))
        except BackendError as e:
            self._count("failures")
            if e.kind == "timeout":
                self._count("timeouts")
            self.manager.mark(False, str(e))
            self._warn_failure(str(e))
            return None, f"LLM {e.kind}: {e}"
        except InvalidVerdict as e:
            self._count("invalid_answers")
            self.manager.mark(True)
            self._warn_failure(f"invalid LLM answer: {e}")
            return None, f"invalid LLM answer: {e}"
        except Exception as e:  # a worker must survive anything a client library throws
            self._count("failures")
            msg = f"{type(e).__name__}: {' '.join(str(e).split())[:200]}"
            self.manager.mark(False, msg)
            self._warn_failure(f"LLM call failed: {msg}")
            return None, f"LLM error: {msg}"
        self._count("answered")
        self.manager.mark(True)
        with self._cond:
            self._cache[q.key] = (time.monotonic() + cfg["cache_ttl_seconds"], llm)
            self._cache.move_to_end(q.key)
            while len(self._cache) > CACHE_MAX:
                self._cache.popitem(last=False)
                self.counts["cache_evictions"] += 1
        return llm, None

    def _settle(self, key: tuple, llm: dict | None, why: str | None) -> None:
        with self._cond:
            q = self._pending.pop(key, None)
        if q is None:
            return  # abandoned at exit: those events already have their verdict
        for job in q.jobs:
            v = combine(job.rule, llm) if llm is not None else fallback(job.rule, why)
            self.deliver(job, v, False)

    def _count(self, name: str, n: int = 1) -> None:
        with self._cond:
            self.counts[name] += n

    def _warn_failure(self, msg: str) -> None:
        # One line per 30 s at most: a dead backend must not flood stderr.
        now = time.monotonic()
        if now - self._last_failure_warning >= 30:
            self._last_failure_warning = now
            self.warn(f"{msg} (rule verdicts stand in; further LLM errors are counted in "
                      "analyzer_status.json)")

    # ------------------------------------------------------------------ exit
    def finish(self, seconds: float) -> int:
        """Stop taking questions, let queued and in-flight ones finish for
        up to `seconds`, then give every remaining event its rule verdict.
        Returns how many were abandoned."""
        deadline = time.monotonic() + seconds
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        while time.monotonic() < deadline:
            with self._cond:
                if not self._pending:
                    break
            time.sleep(0.02)
        with self._cond:
            left = list(self._pending.values())
            self._pending.clear()
            self._queue.clear()
        n = 0
        for q in left:
            for job in q.jobs:
                n += 1
                self.deliver(job, fallback(job.rule, f"abandoned at exit: no LLM answer within "
                                           f"{seconds:g}s"), False)
        self._count("abandoned", n)
        return n

    def snapshot(self) -> dict:
        with self._cond:
            out = dict(self.counts)
            out["queue_depth"] = len(self._queue)
            out["in_flight"] = self._in_flight
            out["cache_size"] = len(self._cache)
        return out
