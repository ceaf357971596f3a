"""The analyzer's reader loop, by blocks: the lines one read of stdin
completed (inputs.read_blocks) are judged in order, with the settings and
the whitelist looked up once for the block, and the rules' final verdicts
kept in a batch that is recorded in one go (one lock, one tally) before
the next read. A block is what the pipe held, never a wait for more: a
line that arrives alone is judged and recorded at once.

Order is kept: the batch is recorded before anything else may record
(another event type, an LLM question, whose cached answer is delivered at
once), so records/ holds the verdicts in the order of the lines. Each line
is still refused alone, with its own reason and line number. A mixin of
pipeline.Analyzer, whose state it uses.
"""

from __future__ import annotations

import gc
import time
from typing import IO, Iterable

from ..events import scrub_text
from ..levels import THREAT_LEVELS
from ..timefmt import utc_now_iso
from .eventcheck import BadLine
from .evidence import threat_from
from .inputs import MAX_LINE, parse_line, read_blocks
from . import sinks
from .sinks import RecordsSink

CHECK_THREADS_EVERY = 1024  # lines between checks that the writer and workers live
GC_THRESHOLD = 50_000       # net allocations between young collections (Python's default: 700)


def quiet_collector() -> None:
    """Keep the cyclic collector off the reader's back (the process's
    owner calls this once started). Every verdict leaves a dozen containers
    alive until the flusher takes them (entry, event, threat, sightings),
    none in a cycle: at the default threshold the collector ran every 60
    events and its full collections walked everything startup made too, a
    third of the reader's CPU. What startup made lives as long as the
    process (frozen: never walked again), and young collections come every
    GC_THRESHOLD allocations; still on, for a cycle an error path may leave."""
    gc.freeze()
    gc.set_threshold(GC_THRESHOLD, 20, 20)


class LineReader:
    """run() and what it needs; Analyzer provides input, flusher, settings,
    whitelist(), _track_settings(), judge_connection(), handle_other(),
    inbound, sink, _tally_many() and _bad_line_warn."""

    def init_reader(self) -> None:
        self._entries: list = []    # the batch: entries the rules settled, in line order
        self._threats: list = []    # their pending threats (HIGH/CRITICAL)
        self._dests: list = []      # connection events the inbound view has not seen yet
        self._block_ts: str | None = None  # when the block being judged was read

    def run(self, stream: IO[bytes]) -> None:
        for block in read_blocks(stream):
            self.handle_block(block)

    def handle_line(self, line: bytes | str | int) -> None:
        """One input line (an int: the length of a line too long to read)."""
        self.handle_block((line,))

    def handle_block(self, lines: Iterable[bytes | str | int]) -> None:
        """Lines read together, judged in order and recorded before returning."""
        inp = self.input
        n = inp["lines"]
        cfg = self.settings.current()
        self._track_settings(cfg)
        wl = self.whitelist()
        # The time of the block's verdicts: its lines are judged within a
        # few milliseconds, and a clock read per verdict was a tenth of keeping it.
        self._block_ts = sinks.clock()
        last = None
        try:
            for line in lines:
                n += 1
                inp["lines"] = n   # per line: a refusal names its line
                if n % CHECK_THREADS_EVERY == 0:
                    self.flusher.ensure_alive()
                try:
                    if isinstance(line, int):
                        raise BadLine(f"line of {line} bytes is over the {MAX_LINE}-byte cap")
                    if not line or line.isspace():   # (no stripped copy of every line)
                        continue
                    ev = parse_line(line)
                    if ev["type"] == "connection":
                        inp["connections"] += 1
                        self.judge_connection(ev, cfg, wl)
                        last = ev
                    else:
                        self.record_batch()   # what this event records comes after
                        self.handle_other(ev)
                except BadLine as e:
                    self._refuse(line, str(e), "invalid_lines")
                except Exception as e:  # noqa: BLE001 (an event no check foresaw: the reader goes on)
                    self._refuse(line, f"could not be judged: {type(e).__name__}: "
                                       f"{' '.join(str(e).split())[:200]}", "handler_errors")
        finally:   # an interrupt (SIGTERM) keeps what was judged
            self.record_batch()
            if last is not None:
                self.last_event = (last.get("ts"), time.time())  # the metrics' analyzer lag

    def keep(self, ev: dict, verdict, target, dedupe_key, targets) -> None:
        """A final verdict of the rules, into the batch (reader thread only)."""
        entry = RecordsSink.make_entry(ev, verdict, "rules", False, self._block_ts)
        self._entries.append(entry)
        if verdict.level in THREAT_LEVELS:   # (threat_from's own test, without the call for most)
            self._threats.append(threat_from(entry, target, dedupe_key, verdict.confidence, targets))

    def record_batch(self) -> None:
        """Record the batch: the sink and the tallies take it in one go."""
        if self._dests:
            dests, self._dests = self._dests, []
            self.inbound.on_connections(dests)
        if self._entries:
            entries, threats = self._entries, self._threats
            self._entries, self._threats = [], []
            self.sink.add_many(entries, threats)
            self._tally_many(entries)

    def _refuse(self, line: bytes | str | int, why: str, counter: str) -> None:
        """Count, say (rate-limited) and keep aside one input line."""
        self.input[counter] += 1
        self._bad_line_warn(f"input line {self.input['lines']}: {why}; skipped "
                            "(kept in records/analyzer_rejected.jsonl)")
        excerpt = "" if isinstance(line, int) else (
            line.decode("utf-8", "backslashreplace") if isinstance(line, bytes) else line)
        self.sink.reject({"ts": utc_now_iso(), "line": self.input["lines"], "reason": why,
                          "bytes": line if isinstance(line, int) else len(line),
                          "excerpt": scrub_text(excerpt[:2000])})
