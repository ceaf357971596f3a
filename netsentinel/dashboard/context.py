"""What every page gets: the settings, the records store, the whitelist file
and this render's snapshot of records/."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable

from .. import audit
from ..netinfo import Protected, ProtectedCache
from ..store import RecordsStore
from ..whitelist import Whitelist, WhitelistFile
from .data import Snapshot
from .settings import Settings


# Streamlit reruns the script per interaction: one cache for the process.
_PROTECTED = ProtectedCache()


@dataclass
class Ctx:
    settings: Settings
    store: RecordsStore
    whitelist_file: WhitelistFile
    snap: Snapshot
    who: str = "dashboard"  # the signed-in session, for the audit trail

    @classmethod
    def open(cls, settings: Settings, warn: Callable[[str], None], who: str = "dashboard") -> "Ctx":
        """warn: where the store's one-line messages go (a file set aside
        during a write, ...); the app shows them to the user."""
        store = RecordsStore(settings.records, warn=warn)
        wl = WhitelistFile(settings.config, warn=warn)
        return cls(settings, store, wl, Snapshot(store), who)

    def read_only(self) -> str | None:
        """What this dashboard cannot do because it cannot write records/
        (run as an unprivileged user, see docs/DASHBOARD.md), or None."""
        records = self.settings.records
        if os.access(records, os.W_OK):
            return None
        # The loader's drop directory (group netsentinel): the store queues
        # ban/unban and rule commands there when it may not take the lock.
        if os.access(records / "ban_commands.d", os.W_OK | os.X_OK):
            return (f"Limited: the dashboard runs as uid {os.geteuid()}. Bans, unbans and filter-rule "
                    "commands are queued for the loader (ban_commands.d/, rule_commands.d/); "
                    "approving or rejecting threats, whitelist and settings changes are refused, "
                    "and the audit trail is not written from here.")
        return (f"Read-only: the dashboard runs as uid {os.geteuid()}, which cannot write "
                f"{records}. Bans, decisions, whitelist and settings changes are refused; make "
                "them with `sudo make run`'s dashboard or the command line.")

    def audit(self, action: str, details: dict, outcome: str = "ok") -> None:
        audit.record(self.store, self.who, action, details, outcome)

    def whitelist_for_write(self) -> Whitelist:
        """The whitelist as it is on disk now; raises ConfigError/StoreError
        when the file is broken (a ban must not be checked against a guess)."""
        return self.whitelist_file.load()

    def protected(self, whitelist: Whitelist) -> Protected:
        return _PROTECTED.get(whitelist.config["protect_ssh_ports"])
