"""Analyzer records -> store rows, and rows back to dicts. Events come from
the loader and verdicts partly from an LLM: every field is checked for type
and clipped, so a hostile value is stored as text or NULL, never refused."""

from __future__ import annotations

import json
import time

from ..timefmt import parse_iso, utc_now_iso
from .schema import COLUMNS

MAX_TEXT = 4096  # a cmdline or an LLM reason longer than this is clipped
KINDS = ("connection", "flow", "threat", "decision")


def _text(v: object) -> str | None:
    if v is None:
        return None
    s = v if isinstance(v, str) else str(v)
    # PostgreSQL refuses NUL in text; a NUL in a comm or cmdline is hostile anyway.
    return s[:MAX_TEXT].replace("\x00", "\ufffd")


def _int(v: object) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) and -2**63 <= v < 2**63 else None


def _num(v: object) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def event_time(ts: object, fallback: float) -> float:
    """The event's own time; the analysis time when it has none readable."""
    try:
        t = parse_iso(ts) if isinstance(ts, str) else None
    except ValueError:
        t = None
    return fallback if t is None else t


def _doc(obj: dict) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"), default=str)[:1 << 20]


def row_of(entry: dict, now: float | None = None) -> tuple:
    """One analyzer verdict entry (RecordsSink.make_entry) as a row."""
    now = time.time() if now is None else now
    ev = entry.get("event") if isinstance(entry.get("event"), dict) else {}
    flow = ev.get("type") == "flow"
    return (event_time(ev.get("ts"), now), now, "flow" if flow else "connection",
            _text(entry.get("level")), _text(entry.get("category")), _num(entry.get("confidence")),
            _text(entry.get("verdict_source")), _text(entry.get("backend")),
            _text(entry.get("reason")), _int(ev.get("pid")), _int(ev.get("uid")),
            _text(ev.get("comm")), _text(ev.get("exe")), _text(ev.get("cmdline")),
            _text(ev.get("src") if flow else ev.get("saddr")), _text(ev.get("daddr")),
            _int(ev.get("dport")), _text(entry.get("id")), _doc(entry))


def record_row(kind: str, record: dict, *, level: object = None, category: object = None,
               reason: object = None, ts: object = None, now: float | None = None) -> tuple:
    """A threat or decision row: the triggering event's process and addresses,
    `ref` the threat id, `doc` the record."""
    now = time.time() if now is None else now
    ev = record.get("event") if isinstance(record.get("event"), dict) else {}
    flow = ev.get("type") == "flow"
    target = record.get("target")
    return (event_time(ts or ev.get("ts"), now), now, kind, _text(level or record.get("level")),
            _text(category or record.get("category")), _num(record.get("confidence")),
            _text(record.get("verdict_source")), _text(record.get("backend")),
            _text(reason or record.get("reason")), _int(ev.get("pid")), _int(ev.get("uid")),
            _text(ev.get("comm")), _text(ev.get("exe")), _text(ev.get("cmdline")),
            _text(ev.get("src") if flow else ev.get("saddr")),
            _text(target if not flow else ev.get("daddr")), _int(ev.get("dport")),
            _text(record.get("id")), _doc(record))


def as_dict(values: tuple) -> dict:
    """A selected row (id + COLUMNS) as a dict with readable times."""
    d = dict(zip(("id",) + COLUMNS, values))
    d["time"] = utc_now_iso(d["ts"])
    d["analyzed"] = utc_now_iso(d["analyzed_at"])
    return d
