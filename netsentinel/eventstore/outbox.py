"""What the analyzer hands the event store's writer process and has not sent
yet (process.StoreProcess, whose lock guards it): ready rows and batches
of verdict entries as the analyzer recorded them, cut into frames of about
FRAME_ITEMS entries, or fewer once the oldest has waited SEND_AFTER_S, and
bounded by dropping the oldest. The recording thread encodes its batch
as it records it (frames.pack: JSON while the entries are in the CPU's
cache, and then let go: entries held here until the sending thread
encoded them kept the collector walking them); the sending thread joins
the batches into frames (frames.frame_of)."""

from __future__ import annotations

import time
from collections import deque

from .frames import unpack

FRAME_ITEMS = 2000       # entries per frame (about 1 MB: one or two pipe writes)
SEND_AFTER_S = 0.1       # a part frame waits at most this long for more entries


class Outbox:
    def __init__(self):
        self._rows: list = []        # ready rows not in a frame yet
        self._chunks: list = []      # (entries, how many) not in a frame yet
        self._pending = 0            # entries in _chunks
        self._since = 0.0            # when the oldest of them came (monotonic)
        self.frames: deque = deque()  # (now, rows, [batches of entries], rows in all), oldest first
        self.rows = 0                # rows here, in frames or not

    def add(self, rows: list, chunk: tuple[list, int] | None,
            now: float | None = None) -> tuple[bool, bool]:
        """Queue them; returns (the first since a frame was cut: the sender
        must learn when to send it, a frame is ready: send it now)."""
        first = not (self._rows or self._chunks)
        if first:
            self._since = time.monotonic()
        self._rows += rows
        self.rows += len(rows)
        if chunk is not None:
            self._chunks.append(chunk)
            self._pending += chunk[1]
            self.rows += chunk[1]
        full = self._pending >= FRAME_ITEMS
        if full:
            self._cut(now)
        return first, full

    def due(self, stopping: bool) -> float | None:
        """Cut a part frame that has waited enough (or all at stop); how long
        until the next one must be cut (None: nothing waits)."""
        if not (self._rows or self._chunks):
            return None
        wait = self._since + SEND_AFTER_S - time.monotonic()
        if stopping or wait <= 0:
            self._cut()
            return None
        return wait

    def pop(self) -> tuple | None:
        if not self.frames:
            return None
        frame = self.frames.popleft()
        self.rows -= frame[3]
        return frame

    def _cut(self, now: float | None = None) -> None:
        if self._rows or self._chunks:
            self.frames.append((time.time() if now is None else now, self._rows,
                                [c for c, _ in self._chunks], len(self._rows) + self._pending))
        self._rows, self._chunks, self._pending = [], [], 0
        self._since = time.monotonic()

    def bound(self, room: int) -> int:
        """Drop the oldest whole frames or batches (as they were recorded)
        until at most `room` rows are left; returns how many went."""
        dropped = 0
        while self.rows > room:
            if self.frames:
                n = self.frames.popleft()[3]
            elif self._rows:  # what is not in a frame yet: ready rows first
                n, self._rows = len(self._rows), []
            elif self._chunks:
                n = self._chunks.pop(0)[1]
                self._pending -= n
            else:
                break
            self.rows -= n
            dropped += n
        return dropped

    def entries(self) -> list:
        """The entries held, oldest first (tests and benches)."""
        chunks = [c for f in self.frames for c in f[2]] + [c for c, _ in self._chunks]
        return [e for c in chunks for e in unpack(c)]

    def clear(self) -> None:
        self.__init__()
