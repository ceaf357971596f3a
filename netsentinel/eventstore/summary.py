"""The time-bucketed summary (schema version 2): event_buckets holds how
many rows each (minute, level, kind) has, and (schema 3) how many connects
they stand for (a folded connection event counts its `count`: timelines
plot connects; counts, which page the rows, count rows). The writer keeps it in the same
transaction as the rows it inserts or expires, so it always equals a
GROUP BY over the rows; timelines and counts over a range read it, a few
hundred rows a day, instead of a day's million index entries.

Exact, not rounded to minutes: a range whose ends are not on a minute
counts its partial first and last minute from the rows (through the time
index: at most two minutes of rows), and whole minutes from the summary."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import fields, replace
from itertools import compress, repeat
from operator import floordiv, itemgetter
from typing import Iterable

from .query import Query
from .schema import BUCKET_S, COLUMNS, CONNECTS, FLOOR_INT, bucket_sql, bucket_start

# A row with no level is counted under '' (a key column cannot be NULL) and
# read back as none: an empty level and none are one.
NO_LEVEL = ""
SUMMARY_VERSION = 2  # the schema version that added event_buckets
CONNECTS_VERSION = 3  # ... and connects, in events and event_buckets
# What a figure counts: rows, or the connects they stand for (a row with no
# fold, NULL, is one), from the rows and from the summary.
_MEASURE = {"n": ("COUNT(*)", "CAST(SUM(n) AS BIGINT)"),
            "connects": ("CAST(SUM(COALESCE(connects, 1)) AS BIGINT)",
                         "CAST(SUM(connects) AS BIGINT)")}
# The filters the summary can answer; any other one set reads the rows.
_ANSWERS = {"since", "until", "kind", "level", "min_level", "levels", "limit", "page",
            "oldest_first"}


def tally(rows: Iterable[tuple]) -> list[tuple[int, str, str, int, int]]:
    """[(bucket_start, level, kind, rows, connects)] of (ts, level, kind,
    connects) tuples, sorted: every writer updates the keys in one order, so
    two PostgreSQL writers of a fleet wait for each other rather than deadlock."""
    rows = rows if isinstance(rows, list) else list(rows)
    # Counted in C first; only folded rows (rare) add to their connects.
    n = Counter((bucket_start(ts), NO_LEVEL if lv is None else lv, k) for ts, lv, k, _ in rows)
    c = Counter(n)
    for ts, lv, k, folded in rows:
        if folded is not None:
            c[(bucket_start(ts), NO_LEVEL if lv is None else lv, k)] += folded - 1
    return sorted((*key, count, c[key]) for key, count in n.items())


def of_rows(rows: list[tuple]) -> Iterable[tuple]:
    """The (ts, level, kind, connects) of inserted rows (schema.COLUMNS order)."""
    return ((r[0], r[3], r[2], r[CONNECTS]) for r in rows)


_TS, _LEVEL, _KIND, _FOLD = (itemgetter(COLUMNS.index(c)) for c in ("ts", "level", "kind", "connects"))


def tally_rows(rows: list[tuple]) -> list[tuple[int, str, str, int, int]]:
    """tally(of_rows(rows)), counted in C: the minute of a row is
    floor(ts) // 60 (floor division goes down for a negative time too, as
    bucket_start does); a Python step a row was most of the summary's cost.
    Folded rows (rare) add their connects after."""
    minutes = map(floordiv, map(math.floor, map(_TS, rows)), repeat(BUCKET_S))
    by_minute = Counter(zip(minutes, map(_LEVEL, rows), map(_KIND, rows)))
    n: Counter = Counter()
    for (minute, lv, k), count in by_minute.items():
        n[(minute * BUCKET_S, NO_LEVEL if lv is None else lv, k)] += count
    c = Counter(n)
    for r in compress(rows, map(_FOLD, rows)):
        lv = _LEVEL(r)
        c[(bucket_start(_TS(r)), NO_LEVEL if lv is None else lv, _KIND(r))] += _FOLD(r) - 1
    return sorted((*key, count, c[key]) for key, count in n.items())


def add(db, cur, rows: list[tuple]) -> None:
    """Count inserted rows (schema.COLUMNS order) in, inside the caller's transaction."""
    ph = db.ph
    cur.executemany(f"INSERT INTO event_buckets (bucket_start, level, kind, n, connects) VALUES "
                    f"({ph}, {ph}, {ph}, {ph}, {ph}) ON CONFLICT (bucket_start, level, kind) "
                    "DO UPDATE SET n = event_buckets.n + excluded.n, "
                    "connects = event_buckets.connects + excluded.connects", tally_rows(rows))


def subtract(db, cur, quads: Iterable[tuple]) -> None:
    """Count deleted rows out, inside the caller's transaction: never below
    zero, and a bucket left at zero rows is removed."""
    ph = db.ph
    keys = [(n, n, c, c, b, lv, k) for b, lv, k, n, c in tally(quads)]
    cur.executemany(f"UPDATE event_buckets SET n = CASE WHEN n > {ph} THEN n - {ph} ELSE 0 END, "
                    f"connects = CASE WHEN connects > {ph} THEN connects - {ph} ELSE 0 END "
                    f"WHERE bucket_start = {ph} AND level = {ph} AND kind = {ph}", keys)
    cur.executemany(f"DELETE FROM event_buckets WHERE bucket_start = {ph} AND level = {ph} "
                    f"AND kind = {ph} AND n <= 0", [k[4:] for k in keys])


def answers(q: Query) -> bool:
    """Only time, kind and level filters: the summary's columns."""
    # Compared with None, not for truth: a uid or port of 0 is a filter.
    return all(f.name in _ANSWERS or getattr(q, f.name) is None or getattr(q, f.name) == ""
               for f in fields(q))


def _exprs(db, cols: tuple[str, ...], width: int | None, on_rows: bool) -> list[str]:
    t = FLOOR_INT[db.engine].format("ts") if on_rows else "bucket_start"
    return [bucket_sql(db.engine, t, width) if c == "t" else c for c in cols]


def _select(db, source: str, cols, width, w: str, params: list, extra: list[str],
            extra_params: list, measure: str) -> list:
    exprs = _exprs(db, cols, width, source == "events")
    n = _MEASURE[measure][source != "events"]
    conds = " AND ".join(extra)
    w = (w + " AND " + conds if w else " WHERE " + conds) if conds else w
    group = f" GROUP BY {', '.join(str(i + 1) for i in range(len(exprs)))}" if exprs else ""
    return db._all(f"SELECT {', '.join([*exprs, n])} FROM {source}{w}{group}",
                   params + extra_params)


def grouped(db, q: Query, cols: tuple[str, ...], width: int | None = None,
            measure: str = "n") -> dict[tuple, int]:
    """{(values of cols): rows (or connects)} over q's range; cols among 't'
    (the start of the `width`-second bucket, width a multiple of a minute),
    'level', 'kind'. Whole minutes from the summary, the partial ends from the rows."""
    since, until = q.since, q.until
    lo = None if since is None else math.ceil(since) + (-math.ceil(since)) % BUCKET_S
    hi = None if until is None else math.floor(until) - math.floor(until) % BUCKET_S
    out: Counter = Counter()

    def rows(a: float | None, b: float | None) -> None:
        out.update(from_rows(db, replace(q, since=a, until=b), cols, width, measure))

    if lo is not None and hi is not None and lo >= hi:
        rows(since, until)  # under two minutes: the rows themselves
        return _levels(out, cols)
    w, params = db._where(replace(q, since=None, until=None))
    extra, extra_params = [], []
    if lo is not None:
        extra.append(f"bucket_start >= {db.ph}")
        extra_params.append(lo)
        if since < lo:
            rows(since, lo)
    if hi is not None:
        extra.append(f"bucket_start < {db.ph}")
        extra_params.append(hi)
        if hi < until:
            rows(hi, until)
    for r in _select(db, "event_buckets", cols, width, w, params, extra, extra_params, measure):
        if r[-1] is not None:
            out[tuple(r[:-1])] += int(r[-1])
    return _levels(out, cols)


def from_rows(db, q: Query, cols: tuple[str, ...], width: int | None = None,
              measure: str = "n") -> dict[tuple, int]:
    """grouped() read from the rows alone (any width; a store without the
    summary, a filter it cannot answer): the same buckets, the same keys."""
    w, params = db._where(q)
    return {tuple(r[:-1]): int(r[-1] or 0)
            for r in _select(db, "events", cols, width, w, params, [], [], measure)}


def _levels(counts: Counter, cols: tuple[str, ...]) -> dict[tuple, int]:
    """The summary's '' level is the rows' NULL."""
    if "level" not in cols:
        return {k: n for k, n in counts.items() if n}
    i = cols.index("level")
    out: Counter = Counter()
    for k, n in counts.items():
        out[k[:i] + ((None if k[i] == NO_LEVEL else k[i]),) + k[i + 1:]] += n
    return {k: n for k, n in out.items() if n}
