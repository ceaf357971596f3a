"""The loader's CrowdSec side (docs/FLEET.md): the bouncer (fleet decisions
enforced here) and, with its own credentials, the machine (this host's
bans shared). The loop calls poll() every turn; HTTP runs in their threads."""

from __future__ import annotations

from typing import Callable

from ..store import RecordsStore
from .crowdsec import Bouncer, FleetOptions
from .crowdsec_machine import Machine


class Fleet:
    def __init__(self, opts: FleetOptions, store: RecordsStore, warn: Callable[[str], None]):
        self.warn = warn
        self.bouncer = (Bouncer(opts.url, opts.key, warn, interval=opts.interval)
                        if opts.key else None)
        self.machine = (Machine(opts.url, opts.machine_id, opts.machine_password, store, warn)
                        if opts.machine_id and opts.machine_password else None)
        if self.bouncer and self.machine:
            self.bouncer.own_ids = self.machine.own_ids
        roles = [r for r, on in (("bouncer", self.bouncer), ("machine", self.machine)) if on]
        warn(f"crowdsec: LAPI {opts.url} as {' and '.join(roles)}"
             + (f", pulling every {opts.interval:g}s" if self.bouncer else ""))

    def start(self) -> None:
        for part in (self.bouncer, self.machine):
            if part:
                part.start()

    def poll(self, table) -> None:
        if self.machine:
            self.machine.poll()
        if self.bouncer:
            self.bouncer.poll(table)

    def on_outcome(self, type_: str, fields: dict, table) -> None:
        if self.machine and type_ in ("ban", "unban"):
            self.machine.on_outcome(type_, fields, table)

    def status(self) -> dict:
        return {**({"bouncer": self.bouncer.status()} if self.bouncer else {}),
                **({"machine": self.machine.status()} if self.machine else {})}

    def stop(self) -> None:
        for part in (self.bouncer, self.machine):
            if part:
                part.stop()
        try:
            if self.machine:
                self.machine.poll()   # record pushes that finished meanwhile: no double push
        except Exception as e:  # detaching must go on
            self.warn(f"crowdsec: could not save the machine state: {e}")
