"""The event store: connection events, flow events, verdicts, threats and
decisions, searchable over time (docs/EVENTSTORE.md). One interface
(base.EventStore), two engines: SQLite in records/ (default) and PostgreSQL
for a fleet (a postgresql:// DSN). Floor level: imports no wing."""

from __future__ import annotations

import os

from ..records import EVENTS_DB
from ..store import RecordsStore
from .base import EventStore, Retention, SchemaTooNew
from .query import Query

DSN_ENV = "NETSENTINEL_STORE_DSN"

__all__ = ["EventStore", "Query", "Retention", "SchemaTooNew", "DSN_ENV", "resolve_dsn",
           "describe", "open_store"]


def resolve_dsn(dsn: str | None, records: RecordsStore) -> str:
    """--store-dsn, else $NETSENTINEL_STORE_DSN, else records/events.sqlite3.
    A DSN is postgresql://..., postgres://..., sqlite:///PATH or a file path."""
    dsn = dsn or os.environ.get(DSN_ENV) or ""
    return dsn.strip() or str(records.path(EVENTS_DB))


def is_postgres(dsn: str) -> bool:
    return dsn.startswith(("postgresql://", "postgres://")) or (
        "=" in dsn and not dsn.startswith(("/", ".", "sqlite:")))  # key=value libpq form


def describe(dsn: str) -> str:
    """The DSN without a password, for status and logs."""
    if is_postgres(dsn) and "://" not in dsn:
        return "postgresql (key=value DSN)"
    if is_postgres(dsn):
        from urllib.parse import urlsplit
        try:
            u = urlsplit(dsn)
            host = u.hostname or "local socket"
            return f"postgresql://{u.username + '@' if u.username else ''}{host}" \
                   f"{':' + str(u.port) if u.port else ''}{u.path}"
        except ValueError:
            return "postgresql (unparsable DSN)"
    return f"sqlite:{dsn.removeprefix('sqlite://')}"


def open_store(dsn: str, retention: Retention | None = None, *, readonly: bool = False) -> EventStore:
    """Open (and, for the writer, create and migrate) the store at dsn."""
    if is_postgres(dsn):
        from .postgres import PostgresEventStore
        return PostgresEventStore(dsn, retention, readonly=readonly)
    from .sqlite import SQLiteEventStore
    return SQLiteEventStore(dsn.removeprefix("sqlite://"), retention, readonly=readonly)
