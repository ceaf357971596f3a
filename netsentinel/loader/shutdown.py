"""The loader's end (Loader.cleanup): monitoring stops, the kernel handles
are let go, the pinned enforcement stays (loader/run.py's top)."""

from __future__ import annotations

import signal

from .pinned import enforcement_left
from .starting import STOP_SIGNALS


def cleanup(loader, warn) -> None:
    """Stop monitoring and let go of the kernel handles, once, leaving the
    pinned enforcement in place; stop signals are held off meanwhile."""
    if loader._cleaned:
        return
    loader._cleaned = True
    loader.events.closing = True
    old = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        if loader._enforcing:   # its work ends before the last counters are saved
            loader._enforcing.stop()
        if loader.protected:
            loader.protected.stop()
        try:
            if loader.bans:
                loader.bans.sync_counters(limit=None)
        except Exception as e:  # counters are a nicety; detaching is not
            warn(f"could not save final counters: {e}")
        if loader.fleet:
            loader.fleet.stop()
        loader.outbound.poll(flush=True)  # outbound (issue 12)
        if loader.raw:
            loader.raw.stop()
        stack_detach = loader.stack.stop_async() if loader.stack else None
        if stack_detach:
            # Joined before any other BCC module is torn down: two threads
            # freeing BCC tables at once crashed the loader (SIGSEGV) once.
            stack_detach.join()
        loader.monitor.stop()
        left = enforcement_left(loader.enforcer, loader.bans)
        if loader.enforcer:
            loader.enforcer.close()
            loader.lock.release()
        loader.write_status(False)
        message = f"stopped ({loader.stop_reason or 'error'}); monitoring ended; {left}"
        loader.events.emit("shutdown", message=message)
        warn(message)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)
