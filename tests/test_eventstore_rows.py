"""rows.row_of's fast path for plain connection verdicts against its general
path: the same row and the same doc for every verdict, plain or hostile,
so the fast path is only ever a shortcut (no engine needed)."""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import orjson
import pytest

from eventstore_support import entry
from netsentinel.eventstore import child, frames, rows
from netsentinel.eventstore.rows import MAX_TEXT, row_of

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
from gen_day import day, entry as day_entry  # noqa: E402

NOW = 1_796_000_000.25
_MISSING = object()
HOSTILE = [None, 0, -1, True, 1.5, float("nan"), 2 ** 63, -2 ** 63 - 1, 2 ** 80, "", "é",
           "a\x00b", "\ud800", "x" * (MAX_TEXT + 1), ["a"], {"k": 1}, {1: 2}, {"a", "b"}, b"x",
           _MISSING]
TIMES = ["2026-12-01T10:00:00.000000Z", "2026-12-01T10:00:00Z", "1969-12-31T23:59:59.999999Z",
         "2026-12-01T10:00:00+00:00", "2026-12-01T10:00:00.5+02:00", "2026-12-01 10:00:00Z",
         "2026-12-01T24:00:00Z", "yesterday", "Z", "", None, 12, "2026-12-01T10:00:00.000000ZZ"]


def general(e: dict) -> tuple:
    """row_of with its fast path turned off."""
    saved = rows._plain_connection
    rows._plain_connection = lambda entry, now, owned=False: None
    try:
        return row_of(e, NOW)
    finally:
        rows._plain_connection = saved


def _set(d: dict, key: str, value: object) -> dict:
    d = copy.deepcopy(d)
    if value is _MISSING:
        d.pop(key, None)
    else:
        d[key] = value
    return d


def _variants() -> list[dict]:
    base = entry(7, cmdline="curl -s https://example.org/")
    out = [base, _set(base, "event", _set(base["event"], "exe", None)),
           _set(base, "event", _set(base["event"], "count", 40)),
           _set(base, "event", _set(base["event"], "count", "forty")),
           _set(base, "event", _set(base["event"], "type", "flow")),
           _set(base, "event", "not an event"), _set(base, "event", _MISSING),
           _set(base, "rule_ids", {"a set"}), _set(base, "note", "\ud800 surrogate"),
           _set(base, "extra", 2 ** 70), _set(base, "extra", {1: "non-str key"})]
    for key in rows._ENTRY_COLS:
        out += [_set(base, key, v) for v in HOSTILE]
    for key in rows._CONN_COLS:
        out += [_set(base, "event", _set(base["event"], key, v)) for v in HOSTILE]
    out += [_set(base, "event", _set(base["event"], "ts", t)) for t in TIMES]
    out.append(_set(base, "event", _set(base["event"], "cmdline", "y" * (MAX_TEXT - 60))))
    return out


def test_a_day_of_plain_verdicts_takes_the_fast_path_and_gets_the_same_rows():
    ents = [day_entry(i, ev, v) for i, (ev, v) in zip(range(3000), (
        p for p in day(6000, seed=5) if p[1] is not None))]
    conns = [e for e in ents if e["event"]["type"] == "connection"]
    assert len(conns) > 2500
    assert all(rows._plain_connection(e, NOW) is not None for e in conns)
    for e in ents:
        assert row_of(e, NOW) == general(e), e["id"]


@pytest.mark.parametrize("e", _variants(), ids=lambda e: str(e.get("id"))[:12])
def test_every_hostile_variant_gets_the_general_paths_row(e):
    assert row_of(e, NOW) == general(e)


def test_the_fast_path_steps_aside_for_what_it_does_not_hold_as_is():
    base = entry(1)
    assert rows._plain_connection(base, NOW) is not None
    for e in (_set(base, "level", "\ud800"), _set(base, "reason", "a\x00b"),
              _set(base, "confidence", float("nan")), _set(base, "confidence", 1),
              _set(base, "event", _set(base["event"], "pid", True)),
              _set(base, "event", _set(base["event"], "dport", 2 ** 63)),
              _set(base, "event", _set(base["event"], "cmdline", "z" * MAX_TEXT)),
              _set(base, "event", _set(base["event"], "daddr", _MISSING))):
        assert rows._plain_connection(e, NOW) is None


def _owned(e: object) -> tuple:
    """row_of of an entry it may take apart (child.rows_of's JSON frames)."""
    return row_of(copy.deepcopy(e), NOW, owned=True)


def test_owned_entries_get_the_general_paths_rows():
    ents = [day_entry(i, ev, v) for i, (ev, v) in zip(range(1000), (
        p for p in day(2000, seed=9) if p[1] is not None))]
    for e in ents + _variants():
        assert _owned(e) == general(e), e.get("id")


def test_an_owned_entry_json_cannot_hold_is_a_row_saying_so():
    # Deeper than either encoder goes: the general path raises, and the
    # writer's retry makes the row below; an owned entry gets it at once.
    def deep_entry() -> dict:
        deep: object = "bottom"
        for _ in range(3000):
            deep = [deep]
        return dict(entry(3), note=deep)

    with pytest.raises(RecursionError):
        general(deep_entry())
    row = row_of(deep_entry(), NOW, owned=True)
    assert row == child._row_or_note(deep_entry(), NOW)
    assert row[8].startswith("a verdict the store could not convert (RecursionError")


def _frame(now: float, chunks: list) -> bytes:
    return frames.encode((now, [], chunks))[frames.HEADER.size:]


def test_a_frame_with_a_bad_verdict_keeps_every_other_row_as_it_was():
    # Owned entries are taken apart as they are converted: one failing in
    # the middle must not send those before it through row_of again.
    good = [entry(i) for i in range(6)]
    chunks = [good[:2], [good[2], "not a verdict", good[3]], [good[4], ["x"], good[5]]]
    frame = _frame(NOW, chunks)
    assert frame[:1] == b"j"
    got = child.rows_of([frame])
    want = [general(good[0]), general(good[1]), general(good[2]),
            child._row_or_note("not a verdict", NOW), general(good[3]), general(good[4]),
            child._row_or_note(["x"], NOW), general(good[5])]
    assert got == want
    assert got[3][8].startswith("a verdict the store could not convert (AttributeError")
    # A marshal frame (what JSON cannot carry) is converted alike, with copies.
    odd = [_set(entry(7), "extra", 2 ** 70), "not a verdict", entry(8)]
    frame = _frame(NOW, [odd])
    assert frame[:1] == b"m"
    assert child.rows_of([frame]) == [general(odd[0]), child._row_or_note(odd[1], NOW),
                                      general(odd[2])]


def test_the_keys_the_fast_path_looks_up_are_the_names_orjson_decodes():
    names = (*rows._ENTRY_COLS, "event", *rows._CONN_COLS, "type", "ts", "count")
    keys = rows._decoded(*names)
    assert keys == names and all(k.__class__ is str for k in keys)
    decoded = orjson.loads(orjson.dumps(dict.fromkeys(names)))
    assert all(a is b for a, b in zip(decoded, keys))  # the decoder's own objects
    e = entry(5)
    assert row_of(orjson.loads(orjson.dumps(e)), NOW, owned=True) == general(e)
