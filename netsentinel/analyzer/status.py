"""analyzer_status.json: what the analyzer is doing, for people and the
dashboard (counts, backend, LLM queue, input refusals, recording health,
bounded-memory evictions), and the one-line summary printed at exit."""

from __future__ import annotations

import os
import time

from ..llm.config import resolve_model
from ..timefmt import utc_now_iso


def build_status(a, running: bool = True) -> dict:
    """The status of Analyzer a."""
    cfg = a.settings.current()
    now = int(time.monotonic())
    with a._lock:
        counts = dict(a.counts)
        sources = dict(a.sources)
        per_min = sum(n for s, n in a._per_second if s > now - 60)
    llm = a.worker.snapshot()
    if a._backend == "rules":
        backend_status = a._backend_note
    else:
        backend_status = a.manager.status if a.manager.status != "not started" \
            else f"ready: {a._backend_note}"
    return {
        "pid": os.getpid(), "started_at": a.started_at, "updated_at": utc_now_iso(),
        "running": running,
        "backend": a._backend, "backend_setting": cfg["backend"],
        "backend_status": backend_status,
        "model": resolve_model(cfg, a._backend) if a._backend != "rules" else None,
        "events_total": sum(counts.values()), "events_per_minute": per_min,
        "counts": counts, "verdict_sources": sources, "llm": llm,
        "input": {**a.input, "other_events": dict(a.input["other_events"])},
        "loader": dict(a.loader),
        "threats": {"flushes": a.sink.threats_written, "auto_bans": a.sink.auto_bans,
                    "waiting_to_write": a.sink.pending_threat_batch(),
                    "folded_in_memory": a.sink.threats_folded,
                    "auto_blocks_withheld": a.autoban.withheld},
        # The unprivileged dashboard's commands (analyzer/dashcmds.py).
        "dashboard_commands": dict(a.dashboard_commands.counts),
        "recording": {**a.sink.recording(), "fatal": a.flusher.fatal,
                      "writer_restarts": a.flusher.restarts,
                      "writer_errors": a.flusher.crashes,
                      "rejected_lines_not_kept": a.sink.rejected_dropped},
        "memory": {**a.engine.memory(), "llm_cache": llm["cache_size"],
                   "llm_cache_evictions": llm.get("cache_evictions", 0)},
        "config": {"from_file": a.settings.from_file, "error": a.settings.error,
                   "in_force": cfg},
        "rules_file": str(a.engine.path),
        "event_store": a.events.status() if a.events is not None else None,
    }


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
