"""A stop asked for while the loader is still starting (its modules being
imported, BCC compiling for seconds) ends the start with status 0, as a stop
does later, instead of a death by signal: nothing is attached yet. The
entry script installs this before it imports anything else (a supervisor
may stop the pipeline at once), Loader.run its own handlers once running."""

from __future__ import annotations

import signal

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def _stop_while_starting(signum, _frame):
    raise SystemExit(0)


def install() -> None:
    for s in STOP_SIGNALS:
        signal.signal(s, _stop_while_starting)
