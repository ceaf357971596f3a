"""The loader's CrowdSec side (docs/FLEET.md): the bouncer (fleet decisions
enforced here) and, with its own credentials, the machine (this host's
bans shared). The loop calls poll() every turn; HTTP runs in their threads.
Also the --crowdsec-* flags and their environment/.env fallbacks."""

from __future__ import annotations

import argparse
import os
from typing import Callable

from dotenv import dotenv_values

from ..paths import PROJECT_ROOT
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
        elif self.machine and type_ == "ban_batch" and fields.get("result") == "restored":
            # A big restore sums itself up in one event (banbatch); the machine
            # still looks at each ban (it skips fleet bans and those it pushed).
            for k in list(table.bans):
                self.machine.on_outcome("ban", {"ip": k, "result": "restored"}, table)
        # A pull's ban_batch carries only crowdsec bans, which are never pushed.

    def busy(self) -> bool:
        """A pull is being applied: the loop should come back without waiting."""
        return bool(self.bouncer and self.bouncer.status()["pending"])

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


def add_fleet_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("CrowdSec fleet (docs/FLEET.md; each flag also from the "
                             "environment or .env: CROWDSEC_LAPI_URL, CROWDSEC_BOUNCER_KEY, "
                             "CROWDSEC_MACHINE_ID, CROWDSEC_MACHINE_PASSWORD)")
    g.add_argument("--crowdsec-url", metavar="URL", help="CrowdSec Local API, e.g. "
                   "http://10.0.0.5:8080")
    g.add_argument("--crowdsec-key", metavar="KEY", help="bouncer API key (`cscli bouncers "
                   "add NAME`): enforce the fleet's ban decisions here")
    g.add_argument("--crowdsec-machine-id", metavar="ID", help="machine login (`cscli machines "
                   "add ID`): push this host's approved bans and flood blocks as alerts")
    g.add_argument("--crowdsec-machine-password", metavar="PW", help="its password "
                   "(better in .env: a flag shows in ps)")
    g.add_argument("--crowdsec-interval", type=float, default=10.0, metavar="SECONDS",
                   help="seconds between decision pulls (default: %(default)s)")


def fleet_options(args: argparse.Namespace) -> FleetOptions | None:
    """FleetOptions from the flags, then the environment, then .env; None when
    no LAPI is configured. The key and password are never printed."""
    env = {**dotenv_values(os.path.join(os.getcwd(), ".env")),
           **dotenv_values(PROJECT_ROOT / ".env"), **os.environ}
    url = args.crowdsec_url or env.get("CROWDSEC_LAPI_URL")
    key = args.crowdsec_key or env.get("CROWDSEC_BOUNCER_KEY")
    mid = args.crowdsec_machine_id or env.get("CROWDSEC_MACHINE_ID")
    pw = args.crowdsec_machine_password or env.get("CROWDSEC_MACHINE_PASSWORD")
    if not (url or key or mid):
        return None
    if not url or not (key or (mid and pw)):
        raise ValueError("CrowdSec needs --crowdsec-url and a bouncer key (--crowdsec-key) "
                         "and/or a machine id and password (--crowdsec-machine-id/-password)")
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"--crowdsec-url must start with http:// or https://, got {url!r}")
    if not 0.5 <= args.crowdsec_interval <= 3600:
        raise ValueError("--crowdsec-interval must be between 0.5 and 3600 seconds")
    return FleetOptions(url, key, mid, pw, args.crowdsec_interval)
