"""Commands an unprivileged dashboard asks root to carry out, through the
drop directory records/dashboard_commands.d/ (root:netsentinel 2770).

The dashboard runs as the `netsentinel` user: it may read records/ but not
write the root-owned files a decision changes (pending_threats.json,
llm_config.json, filter_config.json, audit.jsonl). So it drops one command
per file here and the analyzer, which runs as root and owns those files,
validates and applies it (netsentinel/analyzer/dashcmds.py), writes the
audit entry naming the file's owner uid, and records a refusal with its
reason in dashboard_commands.rejected.json.

A command is one JSON object:
    {"kind": KIND, "id": "<hex>", "by": "who the dashboard says signed in",
     "requested_at": ISO, ...the kind's fields}
with exactly these fields per kind (anything else is refused):
    approve           threat, ttl_seconds (null: permanent), note
    reject            threat, trust (also whitelist the target), note
    contain           threat, ttl_seconds, note, stop (null|TERM|KILL), by_exe: approve
                      by containing the threat's local process (threats.contain)
    whitelist_add     entry_kind (ip|process|port), value
    whitelist_remove  entry_kind, value
    whitelist_save    config (the whole filter_config.json object)
    settings          config (the whole llm_config.json object)
    proposal          proposal, approve (true: queue its valid rules), note
    probe             (nothing) "Test connection" of the settings in force, run by
                      the analyzer, which has root's API keys; its answer is
                      the audit entry's outcome and details.message
    propose           (nothing) "Propose rules" on the Filter rules page: the
                      analyzer asks the model in force about the recent floods
                      in the event store; the proposal waits for a person
    audit             action, details, outcome (an action the dashboard did
                      itself, e.g. a ban queued for the loader, to be recorded)
"by" is whatever the dashboard process wrote: the applier labels it as a
claim; the uid it trusts is the file's owner.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from . import audit, dropdir
from .errors import InputError
from .records import DASHBOARD_COMMANDS, DASHBOARD_COMMANDS_REJECTED
from .store import RecordsStore

MAX_TEXT = 2000
MAX_ID = 128
TTL_MAX = 10 * 365 * 86400
COMMON = {"kind", "id", "by", "requested_at"}
KINDS: dict[str, set[str]] = {
    "approve": {"threat", "ttl_seconds", "note"},
    "reject": {"threat", "trust", "note"},
    "contain": {"threat", "ttl_seconds", "note", "stop", "by_exe"},
    "whitelist_add": {"entry_kind", "value"},
    "whitelist_remove": {"entry_kind", "value"},
    "whitelist_save": {"config"},
    "settings": {"config"},
    "proposal": {"proposal", "approve", "note"},
    "probe": set(),
    "propose": set(),
    "audit": {"action", "details", "outcome"},
}


def _text(cmd: dict, key: str, limit: int = MAX_TEXT, *, optional: bool = False) -> str | None:
    value = cmd.get(key)
    if value is None and optional:
        return None
    if not isinstance(value, str) or (not value and not optional) or len(value) > limit:
        raise InputError(f"{key} must be text of 1-{limit} characters")
    return value


def validate(cmd: Any) -> dict:
    """The command's shape, checked (InputError, one line); its meaning is
    checked by whatever applies it (the threat exists, the entry is valid)."""
    if not isinstance(cmd, dict):
        raise InputError("a dashboard command is one JSON object")
    kind = cmd.get("kind")
    if kind not in KINDS:
        raise InputError(f"unknown kind {str(kind)[:40]!r}; one of {', '.join(KINDS)}")
    extra = set(cmd) - COMMON - KINDS[kind]
    if extra:
        raise InputError(f"{kind}: unexpected fields {', '.join(sorted(map(str, extra)))[:200]}")
    _text(cmd, "id", MAX_ID)
    _text(cmd, "by", 200, optional=True)
    _text(cmd, "requested_at", 64, optional=True)
    if kind in ("approve", "reject", "contain"):
        _text(cmd, "threat", MAX_ID)
        _text(cmd, "note", optional=True)
    if kind == "contain":
        if cmd.get("stop") not in (None, "TERM", "KILL"):
            raise InputError("stop must be null, TERM or KILL")
        if not isinstance(cmd.get("by_exe", True), bool):
            raise InputError("by_exe must be true or false")
    if kind in ("approve", "contain"):
        ttl = cmd.get("ttl_seconds")
        if ttl is not None and (isinstance(ttl, bool) or not isinstance(ttl, int)
                                or not 1 <= ttl <= TTL_MAX):
            raise InputError(f"ttl_seconds must be a whole number of seconds, 1 to {TTL_MAX}, or null")
    if kind == "reject" and not isinstance(cmd.get("trust", False), bool):
        raise InputError("trust must be true or false")
    if kind == "proposal":
        _text(cmd, "proposal", MAX_ID)
        _text(cmd, "note", optional=True)
        if not isinstance(cmd.get("approve"), bool):
            raise InputError("approve must be true or false")
    if kind.startswith("whitelist_") and kind != "whitelist_save":
        if cmd.get("entry_kind") not in ("ip", "process", "port"):
            raise InputError("entry_kind must be ip, process or port")
        if isinstance(cmd.get("value"), bool) or not isinstance(cmd.get("value"), (str, int)):
            raise InputError("value must be text or a port number")
    if kind in ("whitelist_save", "settings") and not isinstance(cmd.get("config"), dict):
        raise InputError(f"{kind}: config must be a JSON object")
    if kind == "audit":
        _text(cmd, "action", 64)
        _text(cmd, "outcome")
        if not isinstance(cmd.get("details", {}), dict):
            raise InputError("details must be a JSON object")
    return cmd


def may_submit(root: Path) -> bool:
    """Can this process drop commands here (the netsentinel group, or root)?"""
    d = Path(root) / DASHBOARD_COMMANDS
    return os.access(d, os.W_OK | os.X_OK)


def submit(root: Path, kind: str, by: str, **fields: Any) -> str:
    """Drop one command (validated first, as the applier will); its id."""
    cmd = {"kind": kind, "id": os.urandom(8).hex(), "by": by, **fields}
    validate(cmd)
    dropdir.submit(Path(root), DASHBOARD_COMMANDS, cmd)
    return cmd["id"]


def outcome(store: RecordsStore, command_id: str, limit: int = 200) -> str | None:
    """What the applier did with a command: "ok", "refused: why", or None
    while it has not handled it yet (read from the audit trail it writes)."""
    return outcomes(store, [command_id], limit)[command_id]


def outcomes(store: RecordsStore, command_ids: list[str], limit: int = 200) -> dict[str, str | None]:
    """outcome() of several commands from one read of the trail."""
    found = answers(store, command_ids, limit)
    return {c: None if e is None else str(e.get("outcome")) for c, e in found.items()}


def answer(store: RecordsStore, command_id: str, limit: int = 200) -> dict | None:
    """The applier's audit entry for a command (None until it handled it)."""
    return answers(store, [command_id], limit)[command_id]


def answers(store: RecordsStore, command_ids: list[str], limit: int = 200) -> dict[str, dict | None]:
    """The applier's latest audit entry for each command (None: not handled yet)."""
    out: dict[str, dict | None] = dict.fromkeys(command_ids)
    entries, _ = audit.read(store, limit=limit, max_bytes=512 * 1024)
    for e in entries:   # oldest first: the latest entry of a command wins
        details = e.get("details")
        cid = details.get("command_id") if isinstance(details, dict) else None
        if isinstance(cid, str) and cid in out:   # a hand-edited trail may hold anything
            out[cid] = e
    return out


def pending(root: Path) -> list[str]:
    """Command files still waiting for the applier."""
    return dropdir.list_files(Path(root), DASHBOARD_COMMANDS)


REJECTED = DASHBOARD_COMMANDS_REJECTED
