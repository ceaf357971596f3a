"""What every page gets: the settings, the records store, the whitelist file
and this render's snapshot of records/."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Callable

from .. import audit, dashcmd
from ..errors import InputError
from ..netinfo import Protected, ProtectedCache
from ..store import RecordsStore, StoreError
from ..whitelist import Whitelist, WhitelistFile
from .data import Snapshot
from .settings import Settings

# How long an action waits to report what root's analyzer made of it (it
# polls every quarter second); past this the page says it is still queued:
# nothing is decided by the wait.
ANSWER_WAIT_S = 5.0


# Streamlit reruns the script per interaction: one cache for the process.
_PROTECTED = ProtectedCache()


def write_audit(store: RecordsStore, who: str, action: str, details: dict, outcome: str = "ok") -> None:
    """An audit entry: written by this process when it may write records/
    (root), else queued for root's analyzer, which writes it naming this
    uid. StoreError (one line) when neither works."""
    if os.access(store.root, os.W_OK) or not dashcmd.may_submit(store.root):
        audit.record(store, who, action, details, outcome)
        return
    try:
        dashcmd.submit(store.root, "audit", who, action=action, details=details,
                       outcome=str(outcome)[:dashcmd.MAX_TEXT])
    except OSError as e:
        raise StoreError(f"cannot queue the audit entry: {e}") from None


@dataclass
class Ctx:
    settings: Settings
    store: RecordsStore
    whitelist_file: WhitelistFile
    snap: Snapshot
    who: str = "dashboard"  # the signed-in session, for the audit trail
    asked: bool = False  # the last action went to the analyzer, which audits it
    deferred: list | None = None  # a bulk action's commands, answered together (answers())

    @classmethod
    def open(cls, settings: Settings, warn: Callable[[str], None], who: str = "dashboard") -> "Ctx":
        """warn: where the store's one-line messages go (a file set aside
        during a write, ...); the app shows them to the user."""
        store = RecordsStore(settings.records, warn=warn)
        wl = WhitelistFile(settings.config, warn=warn)
        return cls(settings, store, wl, Snapshot(store), who)

    @property
    def direct(self) -> bool:
        """Root (`DASHBOARD_USER=root`): writes records/ itself."""
        return os.access(self.settings.records, os.W_OK)

    @property
    def queued(self) -> bool:
        """Unprivileged in the netsentinel group (the default): decisions,
        whitelist and settings go to root's analyzer as commands."""
        return not self.direct and dashcmd.may_submit(self.settings.records)

    def read_only(self) -> str | None:
        """What this dashboard cannot do itself (run as an unprivileged
        user, see docs/DASHBOARD.md), or None."""
        if self.direct or self.queued:
            return None
        return (f"Read-only: the dashboard runs as uid {os.geteuid()}, which cannot write "
                f"{self.settings.records} nor queue commands there (not in the netsentinel group). "
                "Bans, decisions, whitelist and settings changes are refused; make them with "
                "the `netsentinel` command as root.")

    def privilege_note(self) -> str | None:
        if self.queued:
            return (f"Runs as uid {os.geteuid()} (unprivileged): decisions, whitelist and settings "
                    "changes are carried out by the analyzer (root) after its own checks, bans and "
                    "rules by the loader; both record who asked in the audit trail.")
        return self.read_only()

    def ask(self, kind: str, **fields) -> bool:
        """Have root's analyzer do it (records/dashboard_commands.d/). True
        once applied, False while still queued (or deferred: see answers());
        InputError (one line) when it refused. The analyzer audits it."""
        try:
            cid = dashcmd.submit(self.settings.records, kind, self.who, **fields)
        except OSError as e:
            raise InputError(f"cannot queue the {kind} for the analyzer: {e}") from None
        self.asked = True
        if self.deferred is not None:  # a bulk action: answers() waits for all at once
            self.deferred.append(cid)
            return False
        outcome = self.answers([cid])[cid]
        if outcome is not None and outcome != "ok":
            raise InputError(f"The analyzer refused it: {outcome.removeprefix('refused: ')}")
        return outcome == "ok"

    def answers(self, cids: list[str], wait: float = ANSWER_WAIT_S) -> dict[str, str | None]:
        """What the analyzer made of each command ("ok", "refused: why", or
        None when not handled within `wait` seconds)."""
        deadline = time.monotonic() + wait
        out: dict[str, str | None] = dict.fromkeys(cids)
        while True:
            waiting = [c for c, o in out.items() if o is None]
            out.update(dashcmd.outcomes(self.store, waiting, limit=max(200, 2 * len(cids))))
            if all(o is not None for o in out.values()) or time.monotonic() >= deadline:
                return out
            time.sleep(0.1)

    def audit(self, action: str, details: dict, outcome: str = "ok") -> None:
        """Root writes the trail itself; an unprivileged dashboard has the
        analyzer write it (naming this process's uid)."""
        if self.direct or self.queued:
            write_audit(self.store, self.who, action, details, outcome)

    def whitelist_for_write(self) -> Whitelist:
        """The whitelist as it is on disk now; raises ConfigError/StoreError
        when the file is broken (a ban must not be checked against a guess)."""
        return self.whitelist_file.load()

    def protected(self, whitelist: Whitelist) -> Protected:
        return _PROTECTED.get(whitelist.config["protect_ssh_ports"])
