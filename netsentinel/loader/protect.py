"""The protected set (netinfo.protected_addresses: this host's addresses,
its gateway, resolvers, live SSH peers) every ban and rule is checked
against, kept fresh by a thread of its own.

It took three `ip -j` processes and a read of /proc/net/tcp*: under a
connect flood 150-200 ms (each process waited for a CPU beside the
flooders), and computed on demand when the cached set turned PROTECTED_TTL_S
old it landed in whichever ban command came next: every few seconds one ban
took 200 ms longer (the p99 of docs/benchmarks.md section 2). Now it is
four netlink dumps (netsentinel/netlink.py, about 1 ms), and still a thread
refreshes the ban table's cache (netinfo.ProtectedCache) every REFRESH_S,
so a command finds a set younger than the TTL. The guarantee is unchanged: a set older than PROTECTED_TTL_S (the
thread late, the SSH ports changed) is never used, the command computes it
itself as before.
"""

from __future__ import annotations

import threading
from typing import Callable

from ..netinfo import PROTECTED_TTL_S, ProtectedCache
from . import wake

REFRESH_S = PROTECTED_TTL_S / 2   # room for a slow refresh before the set turns stale


class ProtectedFeed:
    """Refreshes `cache` (the ban table's) every `every` seconds."""

    def __init__(self, cache: ProtectedCache, ssh_ports: Callable[[], tuple],
                 warn: Callable[[str], None], every: float = REFRESH_S):
        self.cache, self.ssh_ports, self.warn, self.every = cache, ssh_ports, warn, every
        self._stop = threading.Event()
        self._said: str | None = None

    def start(self) -> None:
        threading.Thread(target=self._run, name="protected", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        wake.control_thread()
        while not self._stop.wait(self.every):
            try:
                self.cache.refresh(self.ssh_ports())
                self._said = None
            except Exception as e:  # noqa: BLE001 - the command path then looks itself, as before
                msg = (f"refreshing the protected addresses failed ({type(e).__name__}: {e}); "
                       "each ban looks them up itself meanwhile")
                if msg != self._said:   # said once, not every REFRESH_S
                    self.warn(msg)
                    self._said = msg
