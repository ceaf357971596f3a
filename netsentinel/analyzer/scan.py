"""Recent activity, kept in bounded memory: sliding-window distinct counts
(the port-scan / host-sweep detector) and each process's last connections
(context for the LLM).

Time is the event's own timestamp, so a replayed stream is judged as it
happened, not as fast as it is read.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass


@dataclass
class WindowCount:
    distinct: int          # distinct values for this (group, sub) in the window
    sample: list           # a few of them, for the reason text
    events: int            # events in the group's window


class _Group:
    __slots__ = ("events", "counts")

    def __init__(self):
        self.events: deque = deque()      # (t, sub, value)
        self.counts: dict = {}             # sub -> {value: n}


class SlidingDistinct:
    """Per group key: how many distinct values (e.g. ports) were seen for a
    sub-key (e.g. the destination host) within the last `window` seconds.

    Memory is bounded: at most max_groups groups (least recently used are
    forgotten) and max_events per group (oldest forgotten first)."""

    def __init__(self, max_groups: int = 8192, max_events: int = 4096):
        self.max_groups = max_groups
        self.max_events = max_events
        self._groups: OrderedDict = OrderedDict()
        self.evicted = 0   # groups forgotten to stay within max_groups (reported in status)

    def __len__(self) -> int:
        return len(self._groups)

    def observe(self, group: tuple, t: float, sub, value, window: float) -> WindowCount:
        g = self._groups.get(group)
        if g is None:
            g = self._groups[group] = _Group()
            if len(self._groups) > self.max_groups:
                self._groups.popitem(last=False)
                self.evicted += 1
        else:
            self._groups.move_to_end(group)
        g.events.append((t, sub, value))
        per_sub = g.counts.setdefault(sub, {})
        per_sub[value] = per_sub.get(value, 0) + 1
        horizon = t - window
        while g.events and (g.events[0][0] < horizon or len(g.events) > self.max_events):
            self._forget(g, g.events.popleft())
        per_sub = g.counts.get(sub, {})
        return WindowCount(len(per_sub), sorted(per_sub)[:12], len(g.events))

    @staticmethod
    def _forget(g: _Group, item: tuple) -> None:
        _, sub, value = item
        per_sub = g.counts[sub]
        n = per_sub[value] - 1
        if n:
            per_sub[value] = n
        else:
            del per_sub[value]
            if not per_sub:
                del g.counts[sub]


class ProcessHistory:
    """The last few connections of each recently seen process (by pid)."""

    def __init__(self, per_process: int = 8, max_processes: int = 4096):
        self.per_process = per_process
        self.max_processes = max_processes
        self._by_pid: OrderedDict = OrderedDict()
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._by_pid)

    def recent(self, pid) -> list[dict]:
        return list(self._by_pid.get(pid, ()))

    def add(self, pid, entry: dict) -> None:
        d = self._by_pid.get(pid)
        if d is None:
            d = self._by_pid[pid] = deque(maxlen=self.per_process)
            if len(self._by_pid) > self.max_processes:
                self._by_pid.popitem(last=False)
                self.evicted += 1
        else:
            self._by_pid.move_to_end(pid)
        d.append(entry)
