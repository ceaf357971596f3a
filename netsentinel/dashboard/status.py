"""Is the loader / analyzer alive? The logic lives on the shared floor
(netsentinel/liveness.py) so the `netsentinel status` command says the same."""

from __future__ import annotations

from ..liveness import STALE_AFTER, Liveness, liveness, pid_alive  # noqa: F401 (re-exported)
