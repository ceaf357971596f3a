"""Analyzer records -> store rows, and rows back to dicts. Events come from
the loader and verdicts partly from an LLM: every field is checked for type
and clipped, so a hostile value is stored as text or NULL, never refused."""

from __future__ import annotations

import json
import time
from datetime import datetime
from operator import itemgetter

from ..timefmt import parse_iso, utc_now_iso
from .schema import COLUMNS, fold

MAX_TEXT = 4096  # a cmdline or an LLM reason longer than this is clipped
# ASCII JSON: a lone surrogate stays an escape, which every engine can store.
_json_encode = json.JSONEncoder(separators=(",", ":"), default=str).encode
try:   # in requirements.txt: about half of row_of's cost was this encoding
    import orjson as _orjson
except ImportError:  # pragma: no cover - a venv without it
    _orjson = None


def _encode(obj) -> str:
    """obj as compact JSON; orjson where it takes it (UTF-8 text, no escapes
    needed), the json module for what it refuses (a lone surrogate, an
    integer past 64 bits), which keeps the escapes above."""
    if _orjson is not None:
        # String keys first (a tenth faster); a dict with other keys again
        # with OPT_NON_STR_KEYS, which writes the same for string keys.
        for option in (None, _orjson.OPT_NON_STR_KEYS):
            try:
                return _orjson.dumps(obj, default=str, option=option).decode()
            except TypeError:   # orjson.JSONEncodeError is one
                pass
    return _json_encode(obj)
KINDS = ("connection", "flow", "threat", "decision")


def _text(v: object) -> str | None:
    if v.__class__ is str and len(v) <= MAX_TEXT and v.isascii() and "\x00" not in v:
        return v  # the common case, first: this runs ten times per event
    if v is None:
        return None
    s = (v if isinstance(v, str) else str(v))[:MAX_TEXT]
    # A lone surrogate (JSON "\ud800" from a hostile name) cannot be encoded
    # and would fail its whole batch, again and again: replaced here (doc
    # keeps it escaped). PostgreSQL refuses NUL in text.
    s = s.encode("utf-8", "replace").decode("utf-8") if not s.isascii() else s
    return s.replace("\x00", "\ufffd")


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


# Fields a column already holds, left out of `doc` when the column holds them
# exactly (a clipped, retyped or hostile value stays in doc as it came), and
# put back by record(): the document is what the analyzer recorded, stored once.
_ENTRY_COLS = {"level": 3, "category": 4, "confidence": 5, "verdict_source": 6, "backend": 7,
               "reason": 8, "id": 17}
_CONN_COLS = {"pid": 9, "uid": 10, "comm": 11, "exe": 12, "cmdline": 13, "saddr": 14, "daddr": 15,
              "dport": 16}
_FLOW_COLS = {"src": 14}


_ABSENT = object()


def _residual(obj: dict, cols: dict, row: list) -> dict:
    # One lookup per column, the same object first (what _text and _int
    # return for a value they keep): a third of row_of's time went here.
    # Equal and of one type otherwise; a NaN (never equal to itself) stays
    # in doc: SQLite stores it as NULL.
    rest = obj.copy()
    get = rest.get
    for k, i in cols.items():
        v = get(k, _ABSENT)
        c = row[i]
        if (c is v and c == c) or (type(c) is type(v) and c == v):
            del rest[k]
    return rest


def _doc(entry: dict, ev: dict, row: list, flow: bool) -> str:
    # The event's ts string stays in doc: re-formatting it per row to prove
    # it equal to the column would cost more than its 30 bytes.
    rest_ev = _residual(ev, _FLOW_COLS if flow else _CONN_COLS, row)
    rest = _residual(entry, _ENTRY_COLS, row)
    if "event" in entry:
        rest["event"] = rest_ev
    return _encode(rest)[:1 << 20]


def row_of(entry: dict, now: float | None = None, owned: bool = False) -> tuple:
    """One analyzer verdict entry (RecordsSink.make_entry) as a row.
    owned: the entry and its event are the caller's alone (decoded for this
    call: child.py), so a plain one's doc is made of them, not of copies;
    the entry is then no longer whole. Never raises once it changed them."""
    now = time.time() if now is None else now
    if entry.__class__ is dict:
        row = _plain_connection(entry, now, owned)
        if row is not None:
            return row
    ev = entry.get("event") if isinstance(entry.get("event"), dict) else {}
    flow = ev.get("type") == "flow"
    row = [event_time(ev.get("ts"), now), now, "flow" if flow else "connection",
           _text(entry.get("level")), _text(entry.get("category")), _num(entry.get("confidence")),
           _text(entry.get("verdict_source")), _text(entry.get("backend")),
           _text(entry.get("reason")), _int(ev.get("pid")), _int(ev.get("uid")),
           _text(ev.get("comm")), _text(ev.get("exe")), _text(ev.get("cmdline")),
           _text(ev.get("src") if flow else ev.get("saddr")), _text(ev.get("daddr")),
           _int(ev.get("dport")), _text(entry.get("id"))]
    # `count` stays in doc too (rare, a few bytes): the record comes back as it was.
    return (*row, _doc(entry, ev, row, flow), None if flow else fold(ev.get("count")))


# row_of's fast path: a connection verdict whose every column field is there
# and already what its column holds (text: ASCII, no NUL, short; numbers of
# their type; or None), which is every verdict of a healthy stream. Its
# checks run in C over all the fields at once, and each column then holds
# the very object the entry does, so `doc` is the entry without those keys:
# the row and doc the general path makes, at half its cost (a per-field
# call was most of row_of's time). Anything else goes the general way.
def _decoded(*keys: str) -> tuple:
    """keys as the very objects orjson decodes them to (it keeps one a
    name): its dicts find a key by identity first, and compare every other
    one (the general kind of dict), a quarter of this path's lookups' cost.
    The same names either way; where orjson made others, equal still matches."""
    if _orjson is None:
        return keys
    got = tuple(_orjson.loads(_orjson.dumps(dict.fromkeys(keys))))
    return got if got == keys else keys


(_LEVEL, _CATEGORY, _CONFIDENCE, _SOURCE, _BACKEND, _REASON, _ID, _EVENT, _PID, _UID, _COMM, _EXE,
 _CMDLINE, _SADDR, _DADDR, _DPORT, _TYPE, _TS, _COUNT) = _decoded(
    *_ENTRY_COLS, "event", *_CONN_COLS, "type", "ts", "count")
_entry_fields = itemgetter(_LEVEL, _CATEGORY, _CONFIDENCE, _SOURCE, _BACKEND, _REASON, _ID)
_conn_fields = itemgetter(_PID, _UID, _COMM, _EXE, _CMDLINE, _SADDR, _DADDR, _DPORT)
_TEXT_TYPES = frozenset((str, type(None)))
_INT_LIMIT = 2 ** 63


def unconvertible(e: BaseException, now: float) -> tuple:
    """The row standing for a verdict row_of could not convert (child.py)."""
    return row_of({"reason": f"a verdict the store could not convert ({type(e).__name__}: "
                             f"{' '.join(str(e).split())[:200]})"}, now)


_fromiso = datetime.fromisoformat


def _plain_connection(entry: dict, now: float, owned: bool = False) -> tuple | None:
    ev = entry.get(_EVENT)
    if ev.__class__ is not dict or ev.get(_TYPE) == "flow":
        return None
    try:
        level, category, confidence, source, backend, reason, ref = _entry_fields(entry)
        pid, uid, comm, exe, cmdline, saddr, daddr, dport = _conn_fields(ev)
    except KeyError:
        return None
    texts = (level, category, source, backend, reason, ref, comm, exe, cmdline, saddr, daddr)
    if not (_TEXT_TYPES.issuperset(map(type, texts))
            and pid.__class__ is int and uid.__class__ is int and dport.__class__ is int
            and -_INT_LIMIT <= min(pid, uid, dport) and max(pid, uid, dport) < _INT_LIMIT
            and (confidence is None or (confidence.__class__ is float
                                        and confidence == confidence))):  # NaN: doc keeps it
        return None
    joined = "".join(filter(None, texts))
    if not (len(joined) <= MAX_TEXT and joined.isascii() and "\x00" not in joined):
        return None
    # parse_iso's first step, inline (two calls were an eighth of this
    # function): the loader's Z form; anything else, or what it refuses,
    # the general way (which tries it again, and fails alike).
    ts = ev.get(_TS)
    t = None
    if ts.__class__ is str and ts[-1:] == "Z":
        try:
            t = _fromiso(ts).timestamp()
        except ValueError:
            pass
    if t is None:
        t = event_time(ts, now)
    count = ev.get(_COUNT)
    # One statement a key: a third of the cost of any loop over the fields.
    # Copies only of what others hold (a quarter of this function's cost).
    rest, rest_ev = (entry, ev) if owned else (entry.copy(), ev.copy())
    del rest[_LEVEL], rest[_CATEGORY], rest[_CONFIDENCE], rest[_SOURCE], rest[_BACKEND]
    del rest[_REASON], rest[_ID]
    del rest_ev[_PID], rest_ev[_UID], rest_ev[_COMM], rest_ev[_EXE], rest_ev[_CMDLINE]
    del rest_ev[_SADDR], rest_ev[_DADDR], rest_ev[_DPORT]
    rest[_EVENT] = rest_ev
    try:  # no options: what orjson refuses (a type JSON lacks, a lone surrogate) goes to _encode
        doc = _orjson.dumps(rest).decode()
    except (TypeError, AttributeError):  # AttributeError: no orjson here
        try:
            doc = _encode(rest)
        except Exception as e:  # too deep for json: what the caller's retry would give
            if not owned:
                raise
            return unconvertible(e, now)
    return (t, now, "connection", level, category, confidence, source, backend, reason, pid, uid,
            comm, exe, cmdline, saddr, daddr, dport, ref, doc[:1 << 20],
            None if count is None else fold(count))


def stored_record(row: dict) -> dict:
    """The stored record as the analyzer wrote it (row_of's doc plus the
    columns it left out)."""
    try:
        rec = json.loads(row["doc"])
    except ValueError:
        return {"doc": row["doc"]}
    if row["kind"] not in ("connection", "flow") or not isinstance(rec, dict):
        return rec
    for k, i in _ENTRY_COLS.items():
        rec.setdefault(k, row[COLUMNS[i]])
    ev = rec.get("event")
    if isinstance(ev, dict):
        for k, i in (_FLOW_COLS if row["kind"] == "flow" else _CONN_COLS).items():
            ev.setdefault(k, row[COLUMNS[i]])
    return rec


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
            _text(record.get("id")),
            _encode(record)[:1 << 20], None)  # a threat or a decision is one, whatever its event


def as_dict(values: tuple) -> dict:
    """A selected row (id + COLUMNS) as a dict with readable times."""
    d = dict(zip(("id",) + COLUMNS, values))
    d["time"] = utc_now_iso(d["ts"])
    d["analyzed"] = utc_now_iso(d["analyzed_at"])
    return d
