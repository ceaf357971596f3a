"""Recent activity, kept in bounded memory: sliding-window distinct counts
(SlidingDistinct for raw-socket egress; DistinctWindow, short and long, for
the connect() scan rules), what each executable keeps coming back to
(Baselines) and each process's last connections (context for the LLM);
how a scan names its actor and its target is scannames.py.

Time is the event's own timestamp, so a replayed stream is judged as it
happened, not as fast as it is read.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Any, Callable


def lru_slot(table: OrderedDict, key, make: Callable[[], Any], limit: int) -> tuple[Any, bool]:
    """table[key], made by make() when missing, now the most recently used;
    when that makes the table longer than limit, the least recently used
    entry goes. Returns (the value, whether an entry was evicted)."""
    value = table.get(key)
    if value is not None:
        table.move_to_end(key)
        return value, False
    value = table[key] = make()
    if len(table) > limit:
        table.popitem(last=False)
        return value, True
    return value, False


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
        g, gone = lru_slot(self._groups, group, _Group, self.max_groups)
        self.evicted += gone
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
        """The process's last connections, oldest first: {"ts", "daddr", "dport"} each."""
        return [{"ts": ts, "daddr": daddr, "dport": dport}
                for ts, daddr, dport in self._by_pid.get(pid, ())]

    def add(self, pid, ts, daddr, dport) -> None:
        # Kept as tuples (every event passes here; recent() is read only
        # when the model is asked); lru_slot inlined.
        d = self._by_pid.get(pid)
        if d is None:
            d = self._by_pid[pid] = deque(maxlen=self.per_process)
            if len(self._by_pid) > self.max_processes:
                self._by_pid.popitem(last=False)
                self.evicted += 1
        else:
            self._by_pid.move_to_end(pid)
        d.append((ts, daddr, dport))


class DistinctWindow:
    """Per group key: the distinct (sub, value) pairs (e.g. (host, port))
    last seen within `window` seconds, each held once whatever how often it
    repeats: memory follows what is distinct, so a window of an hour costs
    no more than one of a minute (the events themselves are not kept).

    Bounded: at most max_groups groups (least recently used forgotten,
    counted in `evicted`) and max_values pairs per group (oldest forgotten
    first, counted in `values_evicted`)."""

    def __init__(self, max_groups: int = 1024, max_values: int = 1024):
        self.max_groups = max_groups
        self.max_values = max_values
        self._groups: OrderedDict = OrderedDict()   # group -> (OrderedDict (sub, value) -> t, {sub: n})
        self.evicted = 0
        self.values_evicted = 0

    def __len__(self) -> int:
        return len(self._groups)

    def observe(self, group: tuple, t: float, sub, value, window: float) -> int:
        """Record one sighting; how many distinct values `sub` has in the window."""
        # lru_slot inlined: this runs for every event, per group and window.
        groups = self._groups
        g = groups.get(group)
        if g is None:
            g = groups[group] = (OrderedDict(), {})
            if len(groups) > self.max_groups:
                groups.popitem(last=False)
                self.evicted += 1
        else:
            groups.move_to_end(group)
        seen, per_sub = g
        key = (sub, value)
        # Refreshed by pop and re-insert (two operations: a test, a move
        # and a store were three); a sighting time is never None.
        if seen.pop(key, None) is None:
            per_sub[sub] = per_sub.get(sub, 0) + 1
        seen[key] = t
        horizon = t - window
        # Most sightings forget nothing: the oldest is in the window.
        if len(seen) > self.max_values or next(iter(seen.values())) < horizon:
            self._forget(seen, per_sub, horizon)
        return per_sub.get(sub, 0)

    def _forget(self, seen, per_sub: dict, horizon: float) -> None:
        """Forget the oldest pairs while out of the window or over max_values."""
        while seen:
            (old_sub, _), old_t = next(iter(seen.items()))
            full = len(seen) > self.max_values
            if old_t >= horizon and not full:
                break
            seen.popitem(last=False)
            self.values_evicted += full
            n = per_sub[old_sub] - 1
            if n:
                per_sub[old_sub] = n
            else:
                del per_sub[old_sub]

    def sample(self, group: tuple, sub, n: int = 12) -> list:
        """`sub`'s n newest values in the window, sorted (for reason texts)."""
        g = self._groups.get(group)
        if g is None:
            return []
        # The newest n (this runs for every event of a scan past its
        # threshold: it must not walk a thousand values each time).
        out = []
        for s, v in reversed(g[0]):
            if s == sub:
                out.append(v)
                if len(out) == n:
                    break
        # Numbers by value, addresses by length then text (10.0.0.2 before 10.0.0.10).
        return sorted(out, key=lambda v: (1, len(v), v) if isinstance(v, str) else (0, v, ""))


class Baselines:
    """What each executable (uid, exe) keeps coming back to. A destination
    (host, port) is learned when it is seen again at least min_gap seconds
    after its first sighting: a poller scraping its exporters, an agent
    reporting home. Learned destinations are not new, so they never count
    towards a scan; the first round of a poller does (it looks exactly like
    a scan: configure monitoring agents in scan_allowed_exes).

    The gap keeps a scanner's own retransmissions (within a second or two)
    from teaching it anything. Bounded: max_identities executables (least
    recently used forgotten), max_destinations each (oldest forgotten)."""

    def __init__(self, max_identities: int = 512, max_destinations: int = 512,
                 min_gap: float = 5.0):
        self.max_identities = max_identities
        self.max_destinations = max_destinations
        self.min_gap = min_gap
        self._by_ident: OrderedDict = OrderedDict()  # ident -> OrderedDict dest -> [first_t, learned]
        self.evicted = 0
        self.learned = 0

    def __len__(self) -> int:
        return len(self._by_ident)

    def known(self, ident: tuple, dest: tuple, t: float) -> bool:
        """Record a sighting; True when dest is (now) part of ident's baseline."""
        by_ident = self._by_ident
        d = by_ident.get(ident)   # lru_slot inlined: every connection passes here
        if d is None:
            d = by_ident[ident] = OrderedDict()
            if len(by_ident) > self.max_identities:
                by_ident.popitem(last=False)
                self.evicted += 1
        else:
            by_ident.move_to_end(ident)
        entry = d.get(dest)
        if entry is None:
            d[dest] = [t, False]
            if len(d) > self.max_destinations:
                d.popitem(last=False)
            return False
        d.move_to_end(dest)
        if not entry[1] and t - entry[0] >= self.min_gap:
            entry[1] = True
            self.learned += 1
        return entry[1]
