"""What every page gets: the settings, the records store, the whitelist file
and this render's snapshot of records/."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

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

    @classmethod
    def open(cls, settings: Settings, warn: Callable[[str], None]) -> "Ctx":
        """warn: where the store's one-line messages go (a file set aside
        during a write, ...); the app shows them to the user."""
        store = RecordsStore(settings.records, warn=warn)
        wl = WhitelistFile(settings.config, warn=warn)
        return cls(settings, store, wl, Snapshot(store))

    def whitelist_for_write(self) -> Whitelist:
        """The whitelist as it is on disk now; raises ConfigError/StoreError
        when the file is broken (a ban must not be checked against a guess)."""
        return self.whitelist_file.load()

    def protected(self, whitelist: Whitelist) -> Protected:
        return _PROTECTED.get(whitelist.config["protect_ssh_ports"])
