"""The protected set (netinfo.protected_addresses: this host's addresses,
its gateway, resolvers, live SSH peers) every ban and rule is checked
against, kept fresh by a thread of its own.

It takes three `ip -j` processes and a read of /proc/net/tcp*. Under a
connect flood that is 150-200 ms (each process waits for a CPU beside the
flooders), and computed on demand when the cached set turned PROTECTED_TTL_S
old it landed in whichever ban command came next: every few seconds one ban
took 200 ms longer (the p99 of docs/benchmarks.md section 2). Here a thread
recomputes it every REFRESH_S, so a command finds a set younger than the
TTL. The guarantee is unchanged: a set older than PROTECTED_TTL_S (the
thread late, the SSH ports changed) is never used, the command computes it
itself as before.
"""

from __future__ import annotations

import threading
import time
from typing import Callable

from ..netinfo import PROTECTED_TTL_S, Protected, protected_addresses
from . import wake

REFRESH_S = PROTECTED_TTL_S / 2   # room for a slow refresh before the set turns stale


class ProtectedFeed:
    def __init__(self, ssh_ports: Callable[[], tuple], warn: Callable[[str], None],
                 ttl: float = PROTECTED_TTL_S, every: float = REFRESH_S):
        self.ssh_ports, self.warn, self.ttl, self.every = ssh_ports, warn, ttl, every
        self._current: tuple[tuple, float, Protected] | None = None   # (ports, taken at, set)
        self._stop = threading.Event()
        self._said: str | None = None

    def get(self) -> Protected:
        ports = tuple(self.ssh_ports())
        cur = self._current   # one reference, published whole by _take
        if cur is not None and cur[0] == ports and time.monotonic() - cur[1] < self.ttl:
            return cur[2]
        return self._take(ports)

    def _take(self, ports: tuple) -> Protected:
        at = time.monotonic()   # before the look: its age errs on the old side
        value = protected_addresses(ports)
        cur = self._current
        if cur is None or cur[1] <= at:   # never replace a newer look with an older one
            self._current = (ports, at, value)
        return value

    def start(self) -> None:
        threading.Thread(target=self._run, name="protected", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        wake.control_thread()
        while not self._stop.wait(self.every):
            try:
                self._take(tuple(self.ssh_ports()))
                self._said = None
            except Exception as e:  # noqa: BLE001 - the command path then looks itself, as before
                msg = (f"refreshing the protected addresses failed ({type(e).__name__}: {e}); "
                       "each ban looks them up itself meanwhile")
                if msg != self._said:   # said once, not every REFRESH_S
                    self.warn(msg)
                    self._said = msg
