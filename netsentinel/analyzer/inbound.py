"""The analyzer's per-source inbound view (issue 13): who completed
handshakes with this host (`accepts` events), which TCP sessions are open in
either direction (`tcp_health`), and where this host itself connects
(`connection`). It feeds three decisions:

- brute force: inbound connections accepted per source and port over a
  sliding minute (120 SSH connections a minute from one address is HIGH);
- SYN floods against an open port: SYNs minus the handshakes the same
  source completed (floods.py);
- the auto-ban policy (autoban.py): a completed handshake proves an address
  is the sender's; a session or a destination of ours protects it.

Every table is bounded; an address is a string as the loader wrote it.
Thread-safe: the reader writes, the records flusher asks (autoban.py).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable

from .eventcheck import count

BRUTE_WINDOW_S = 60.0
# Accepted connections per source and port in BRUTE_WINDOW_S. HIGH from 60
# (one a second: the slow SSH brute force is 120, 2/s); CRITICAL from
# 1,200 (20/s sustained for a minute: a connection flood no interactive
# client makes). Documented in docs/ANALYZER.md against the tools.
BRUTE_HIGH = 60
BRUTE_CRITICAL = 1200
PROOF_S = 60.0          # a handshake proves its address for this long
TALKED_S = 600.0        # a destination this host connected to is protected this long
SESSION_IDLE_S = 3600.0  # an open session not reported for this long is forgotten
RATE_S = 4.0            # accepts this recent give a source's handshake rate
MAX_SOURCES = 65536     # per table; the stalest go first


@dataclass
class BruteForce:
    src: str
    port: int
    count: int          # accepted connections in the window
    window_s: float
    level: str          # HIGH or CRITICAL

    @property
    def reason(self) -> str:
        per_min = self.count * 60.0 / self.window_s
        return (f"{self.count} inbound connections accepted from {self.src} on port {self.port} in "
                f"{self.window_s:.0f} s ({per_min:.0f}/min; {self.level} from "
                f"{BRUTE_HIGH if self.level == 'HIGH' else BRUTE_CRITICAL} a minute)")


def _trim(table: dict, limit: int = MAX_SOURCES) -> None:
    """Drop the oldest-inserted entries past limit (dicts keep insertion
    order and every update re-inserts)."""
    while len(table) > limit:
        table.pop(next(iter(table)))


class InboundView:
    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        self._lock = threading.Lock()
        self._accepts: dict[tuple[str, int], deque] = {}   # (src, port) -> (t, count)
        self._proof: dict[str, tuple[float, int]] = {}      # src -> (last accept t, port)
        self._recent: dict[str, deque] = {}                 # src -> (t, count), last RATE_S
        self._sessions: dict[tuple, tuple[str, str, float]] = {}  # conn -> (remote, direction, t)
        self._by_remote: dict[str, set] = {}                # remote -> its open conns
        self._talked: dict[str, tuple[float, int]] = {}     # daddr -> (t, dport)
        self._alerted: dict[tuple[str, int], str] = {}      # (src, port) -> level said this window

    # ----------------------------------------------------------- inputs
    def on_accepts(self, ev: dict) -> list[BruteForce]:
        """An `accepts` event: remember it; the (source, port) pairs whose
        count in the last minute reached a brute-force level (each level
        once per pair until it falls below)."""
        now = self.clock()
        out = []
        rows = ev.get("sources")
        interval = ev.get("interval_s")
        interval = float(interval) if count(interval) is not None or isinstance(interval, float) else 0.0
        with self._lock:
            for row in rows if isinstance(rows, list) else ():
                if not isinstance(row, dict):
                    continue
                src, port, n = row.get("src"), count(row.get("port")), count(row.get("count"))
                if not (isinstance(src, str) and port is not None and port < 65536 and n):
                    continue
                key = (src, port)
                q = self._accepts.pop(key, None) or deque()
                q.append((now, n))
                while q and q[0][0] < now - BRUTE_WINDOW_S:
                    q.popleft()
                self._accepts[key] = q
                self._proof.pop(src, None)
                self._proof[src] = (now, port)
                r = self._recent.pop(src, None) or deque()
                r.append((now, n))
                while r and r[0][0] < now - RATE_S:
                    r.popleft()
                self._recent[src] = r
                total = sum(c for _, c in q)
                level = "CRITICAL" if total >= BRUTE_CRITICAL else "HIGH" if total >= BRUTE_HIGH else None
                if level is None:
                    self._alerted.pop(key, None)
                elif self._alerted.get(key) != level:
                    self._alerted[key] = level
                    span = max(now - q[0][0] + min(max(interval, 0.0), BRUTE_WINDOW_S), 1.0)
                    out.append(BruteForce(src, port, total, min(span, BRUTE_WINDOW_S), level))
            for t in (self._accepts, self._proof, self._recent, self._alerted):
                _trim(t)
        return out

    def on_tcp_health(self, ev: dict) -> None:
        """Open sessions in either direction; the remote end is daddr for
        both (the socket's peer)."""
        key = (ev.get("saddr"), ev.get("sport"), ev.get("daddr"), ev.get("dport"))
        remote = ev.get("daddr")
        if not (isinstance(remote, str) and isinstance(key[0], str)
                and count(key[1]) is not None and count(key[3]) is not None):
            return
        with self._lock:
            self._forget(key)
            if not ev.get("final") and ev.get("state") == "ESTABLISHED":
                self._sessions[key] = (remote, str(ev.get("direction")), self.clock())
                self._by_remote.setdefault(remote, set()).add(key)
                while len(self._sessions) > MAX_SOURCES:
                    self._forget(next(iter(self._sessions)))

    def _forget(self, key: tuple) -> None:
        """Drop one session (the caller holds the lock)."""
        got = self._sessions.pop(key, None)
        if got is not None:
            keys = self._by_remote.get(got[0])
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self._by_remote[got[0]]

    def on_connection(self, ev: dict) -> None:
        """This host connecting out: the destination is one it uses."""
        self.on_connections((ev,))

    def on_connections(self, evs) -> None:
        """on_connection for connection events read together (one lock, one
        clock read)."""
        now = self.clock()
        with self._lock:
            talked = self._talked
            for ev in evs:
                dst = ev.get("daddr")
                if isinstance(dst, str):
                    talked.pop(dst, None)
                    dport = ev.get("dport")
                    talked[dst] = (now, dport if isinstance(dport, int) else 0)
            _trim(talked)   # the same table as trimming after each: the newest kept

    # ---------------------------------------------------------- queries
    def accept_rate(self, src: str) -> float:
        """Handshakes per second this source completed lately (0.0 if none)."""
        now = self.clock()
        with self._lock:
            r = self._recent.get(src)
            if not r:
                return 0.0
            n = sum(c for t, c in r if t >= now - RATE_S)
        return n / RATE_S

    def _age(self, table: dict, src: str, max_age: float) -> tuple[float, int] | None:
        """(seconds since, port) of src's entry in table if younger than max_age."""
        with self._lock:
            got = table.get(src)
        age = self.clock() - got[0] if got else None
        return (age, got[1]) if age is not None and age <= max_age else None

    def proven(self, src: str) -> str | None:
        """Why src is known to be the address its packets say, or None."""
        got = self._age(self._proof, src, PROOF_S)
        return f"it completed a TCP handshake on port {got[1]} {got[0]:.0f} s ago" if got else None

    def talked_to(self, src: str) -> str | None:
        """Did this host connect to src lately? In words, or None."""
        got = self._age(self._talked, src, TALKED_S)
        return f"this host connected to it (port {got[1]}) {got[0]:.0f} s ago" if got else None

    def session(self, src: str) -> str | None:
        """An open TCP session with src (either direction), in words, or None."""
        now = self.clock()
        with self._lock:
            for key in list(self._by_remote.get(src, ())):
                _, direction, t = self._sessions[key]
                if now - t > SESSION_IDLE_S:
                    self._forget(key)
                    continue
                laddr, lport, _, rport = key
                return f"an established {direction} TCP session ({laddr}:{lport} <-> {src}:{rport})"
        return None
