"""A search over the store: a time range, exact filters, free text, paging.
One builder for both engines (only the placeholder differs)."""

from __future__ import annotations

from dataclasses import dataclass, fields

from ..levels import LEVELS
from .schema import PARTIAL

MAX_LIMIT = 10_000
MAX_IDS = 500  # procs ids a filter names as parameters; more: a subquery


@dataclass
class Query:
    since: float | None = None      # Unix seconds, inclusive
    until: float | None = None      # exclusive
    kind: str | None = None
    process: str | None = None      # comm, or the exe's path or its base name
    exe: str | None = None
    uid: int | None = None
    dst: str | None = None
    src: str | None = None          # a flow's source, or a connection's local address
    addr: str | None = None         # either of the two
    port: int | None = None
    level: str | None = None        # this level or higher when min_level
    min_level: bool = False
    levels: tuple[str, ...] | None = None  # any of these (the dashboard's level picker)
    category: str | None = None
    text: str | None = None         # substring of reason, category, comm, exe, cmdline, addresses
    limit: int = 100
    page: int = 1                   # 1-based
    oldest_first: bool = False

    def __post_init__(self) -> None:
        if self.level is not None:
            self.level = self.level.upper()
            if self.level not in LEVELS:
                raise ValueError(f"unknown level {self.level!r} (one of {', '.join(LEVELS)})")
        if self.levels is not None:
            self.levels = tuple(lv.upper() for lv in self.levels)
            unknown = [lv for lv in self.levels if lv not in LEVELS]
            if unknown:
                raise ValueError(f"unknown level {unknown[0]!r} (one of {', '.join(LEVELS)})")
        if not 1 <= self.limit <= MAX_LIMIT:
            raise ValueError(f"limit must be 1..{MAX_LIMIT}, got {self.limit}")
        if self.page < 1:
            raise ValueError(f"page must be 1 or more, got {self.page}")

    def describe(self) -> dict:
        # `is`: a uid or port of 0 is a filter, not "unset".
        return {f.name: getattr(self, f.name) for f in fields(self)
                if getattr(self, f.name) is not None and getattr(self, f.name) is not False}


def _like(text: str) -> str:
    return "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def where(q: Query, ph: str, proc_ids=None, is_source=None) -> tuple[str, list]:
    """(' WHERE ...' or '', params) with `ph` as the placeholder.
    Schema 4's lookups (None for an older store, whose indexes differ):
    proc_ids(column, value), the procs ids whose comm or exe is value (a
    process or exe filter reads the (proc, ts) index); is_source(addr),
    whether a connection ever had addr as its source (sources.py: if not,
    a source filter reads the index of the other rows alone)."""
    conds, params = [], []

    def add(sql: str, *values) -> None:
        conds.append(sql.replace("?", ph))
        params.extend(values)

    if q.since is not None:
        add("ts >= ?", q.since)
    if q.until is not None:
        add("ts < ?", q.until)
    def process(col: str, value: str) -> None:
        if proc_ids is None:
            return add(f"{col} = ?", value)
        ids = proc_ids(col, value)
        # One id (a name with one executable, the common case): `proc = ?`,
        # which reads the index in time order, with no sort for a page.
        if len(ids) > MAX_IDS:  # a name a hostile user gave to countless programs
            add(f"proc IN (SELECT id FROM procs WHERE {col} = ?)", value)
        elif len(ids) == 1:
            add("proc = ?", ids[0])
        else:
            add(f"proc IN ({', '.join('?' for _ in ids)})" if ids else "1 = 0", *ids)

    for col in ("kind", "uid", "category"):
        if getattr(q, col) is not None:
            add(f"{col} = ?", getattr(q, col))
    if q.exe is not None:
        process("exe", q.exe)
    if q.kind not in (None, "connection"):
        conds.append(PARTIAL["kind"])  # lets the engine use the partial index
    if q.process is not None:
        # A path is an exe; a name is the process name (comm: the kernel's, 15 characters).
        process("exe" if "/" in q.process else "comm", q.process)
    if q.dst is not None:
        add("daddr = ?", q.dst)
    def src(addr: str) -> str:
        if is_source is None or is_source(addr):
            return "saddr = ?"
        return f"(saddr = ? AND {PARTIAL['saddr']})"  # what the partial index holds

    if q.src is not None:
        add(src(q.src), q.src)
    if q.addr is not None:
        add(f"({src(q.addr)} OR daddr = ?)", q.addr, q.addr)
    if q.port is not None:
        add("dport = ?", q.port)
    def levels_in(wanted) -> None:
        if not wanted:
            conds.append("1 = 0")  # no level picked: nothing matches
            return
        add(f"level IN ({', '.join('?' for _ in wanted)})", *wanted)
        if "INFO" not in wanted:
            conds.append(PARTIAL["level"])  # lets the engine use the partial index

    if q.level is not None:
        levels_in(LEVELS[LEVELS.index(q.level):] if q.min_level else (q.level,))
    if q.levels is not None:
        levels_in(q.levels)
    if q.text:
        pat = _like(q.text.lower())
        cols = ("reason", "category", "comm", "exe", "cmdline", "saddr", "daddr", "ref")
        add("(" + " OR ".join(f"LOWER({c}) LIKE ? ESCAPE '\\'" for c in cols) + ")",
            *([pat] * len(cols)))
    return (" WHERE " + " AND ".join(conds)) if conds else "", params


def page_sql(q: Query, ph: str) -> tuple[str, list]:
    order = "ASC" if q.oldest_first else "DESC"
    return f" ORDER BY ts {order}, id {order} LIMIT {ph} OFFSET {ph}", [q.limit,
                                                                          (q.page - 1) * q.limit]
