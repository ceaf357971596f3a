"""Reading records/ for display.

The dashboard refreshes every few seconds while other processes write, and
people edit these files by hand: a missing file is normal, and a file that
does not parse, or has the wrong shape, is reported in one line and shown as
empty. It is never moved aside here (on_corrupt="raise" and catch: the
reader learns why, the file stays where it is for its writer to deal with).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from .. import records
from ..store import CorruptFile, RecordsStore, StoreError
from ..liveness import ago, duration, ts_of  # noqa: F401 (the pages import them from here)


def _shape(value: Any) -> str:
    return {dict: "object", list: "list"}.get(type(value), type(value).__name__)


def read_json(store: RecordsStore, name: str, default: Any) -> tuple[Any, str | None]:
    """(parsed value, None) or (default, one-line notice). Never modifies the file."""
    try:
        value = store.read(name, default, on_corrupt="raise")
    except CorruptFile as e:
        return _copy(default), f"{e}. It is left as it is; fix or remove it."
    except StoreError as e:
        return _copy(default), str(e)
    if not isinstance(value, type(default)):
        return _copy(default), (f"{name}: expected a JSON {_shape(default)}, found "
                                f"{_shape(value)}; ignored")
    return value, None


def _copy(default: Any) -> Any:
    return type(default)(default) if isinstance(default, (list, dict)) else default


@dataclass
class Snapshot:
    """The records files one page render needs, each read at most once, with
    a notice per file that could not be used."""
    store: RecordsStore
    notices: dict[str, str] = field(default_factory=dict)

    def _get(self, name: str, default: Any) -> Any:
        value, notice = read_json(self.store, name, default)
        if notice:
            self.notices[name] = notice
        return value

    @cached_property
    def loader_status(self) -> dict:
        return self._get(records.LOADER_STATUS, {})

    @cached_property
    def analyzer_status(self) -> dict:
        return self._get(records.ANALYZER_STATUS, {})

    @cached_property
    def threats(self) -> list[dict]:
        return [t for t in self._get(records.PENDING_THREATS, []) if isinstance(t, dict)]

    @cached_property
    def pending(self) -> list[dict]:
        return [t for t in self.threats if t.get("status") == "pending"]

    @cached_property
    def bans(self) -> dict[str, dict]:
        return {k: (v if isinstance(v, dict) else {}) for k, v in self._get(records.BANNED_IPS, {}).items()}

    @cached_property
    def queued_commands(self) -> list[dict]:
        return [c for c in self._get(records.BAN_COMMANDS, []) if isinstance(c, dict)]

    @cached_property
    def rejected_commands(self) -> list[dict]:
        return [c for c in self._get(records.BAN_COMMANDS_REJECTED, []) if isinstance(c, dict)]


# ------------------------------------------------------------- secrets
_SECRET_NAME = re.compile(r"(api[_-]?key|token|secret|password|passwd|authorization)", re.I)
_URL_CREDENTIALS = re.compile(r"(://)([^/@\s]+)@")
_KEY_LIKE = re.compile(r"(?<![A-Za-z0-9])(sk-[A-Za-z0-9_\-]{8,}|[A-Za-z0-9]{24,}\.[A-Za-z0-9]{8,})")


def mask_secret(value: Any) -> str:
    """'set (hidden)' for a non-empty secret, 'not set' otherwise: no character of a key is shown."""
    return "set (hidden)" if value else "not set"


def mask_text(text: str) -> str:
    """Hide URL credentials and key-looking tokens inside free text."""
    text = _URL_CREDENTIALS.sub(r"\1***@", text)
    return _KEY_LIKE.sub("***", text)


def masked(obj: Any, key: str = "") -> Any:
    """A copy of a JSON value with secret-named fields and key-like strings hidden."""
    if isinstance(obj, dict):
        return {k: masked(v, str(k)) for k, v in obj.items()}
    if isinstance(obj, list):
        return [masked(v, key) for v in obj]
    if isinstance(obj, str):
        return mask_secret(obj) if _SECRET_NAME.search(key) else mask_text(obj)
    return obj
