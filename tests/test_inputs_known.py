"""The analyzer's shortcuts for the lines it reads most, against the general
path on hostile input: a connection event of a shape eventcheck knows (keys
and value types of one found right) has only its values checked. It may not
accept, refuse or read anything differently: it is compared with the
general path (the json module, then every check) over values chosen to hurt."""

from __future__ import annotations

import json
import random
import time
from datetime import datetime, timedelta, timezone

import pytest
from analyzer_support import conn

from netsentinel.analyzer import eventcheck, inputs
from netsentinel.analyzer.eventcheck import BadLine
from netsentinel.timefmt import parse_iso

SECOND = "2026-12-02T16:02:14"
# Times one character or a form away from the events' own: digits that
# int() takes and fromisoformat does not, other separators and offsets
# (some parse_iso reads), impossible dates and times, other lengths.
ODD_TIMES = [
    SECOND + ".１２３４５６Z", SECOND + ".١٢٣٤٥٦Z", SECOND + ".12345²Z", SECOND + ".+12345Z",
    SECOND + ". 12345Z", SECOND + ".1_2345Z", SECOND + ".-12345Z", SECOND + ",123456Z",
    SECOND + ".123456z", SECOND + ".123456+01:00", SECOND + ".123456-00:00", SECOND + ".123456+00:00",
    SECOND + ".12345Z", SECOND + ".1234567Z", SECOND + ".123Z", SECOND + "Z", SECOND + ".123456ZZ",
    SECOND + ".123456", SECOND + ".123456Z ", " " + SECOND + ".12345Z", SECOND + "x123456Z",
    "2026-13-01T16:02:14.123456Z", "2026-02-30T16:02:14.123456Z", "2026-12-02T24:02:14.123456Z",
    "2026-12-02T23:59:60.123456Z", "2026-12-02T16:60:14.123456Z", "0000-12-02T16:02:14.123456Z",
    "2026-12-02 16:02:14.123456Z", "2026-W49-3T16:02:14.123456Z", "20261202T160214.123456Z",
    "2026-12-02T16:02:14.123456Z\x00", "yesterday", "", "Z",
]


def _outcome(fn, *args):
    try:
        v = fn(*args)
    except Exception as e:   # noqa: BLE001 (the exception itself is what is compared)
        return "raised", type(e).__name__, str(e)
    return "value", v


def _reset():
    eventcheck._last_ts = ("", None)
    eventcheck.KNOWN_SHAPES.clear()
    eventcheck._GOOD_SHAPES.clear()


def _general(line: bytes):
    """parse_line's outcome through the json module, no shape known."""
    saved = set(eventcheck.KNOWN_SHAPES)
    eventcheck.KNOWN_SHAPES.clear()
    eventcheck._last_ts = ("", None)
    try:
        return _outcome(lambda b: inputs.parse_line(b, fast=False), line)
    finally:
        eventcheck.KNOWN_SHAPES.update(saved)


def _line(ev) -> bytes:
    return json.dumps(ev, ensure_ascii=False).encode("utf-8", "surrogatepass")


# Values of the right JSON type in the wrong range or form: a known shape
# must not let any through. (Wrong types change the shape.)
HOSTILE_VALUES = {
    "v": [0, 2, -1, 2 ** 40], "type": ["flow", "lost", "stats", "Connection", "connection ", ""],
    "pid": [-1, 2 ** 32, 2 ** 32 - 1, 2 ** 63, -2 ** 63], "uid": [-1, 2 ** 32, 2 ** 32 - 1, 0],
    "dport": [-1, 65536, 65535, 0, 2 ** 40], "family": ["ipv5", "IPV4", "", "ipv4\x00", "inet"],
    "daddr": ["10.0.0.300", "", "::1", "fe80::1%eth0", " 10.0.0.1", "10.0.0.1\n", "0x0a000001",
              "2001:db8::" + "1" * 60, "010.0.0.1", "::ffff:10.0.0.1"],
    "ts": ODD_TIMES + [SECOND + ".000002Z", "2026-12-02T16:02:15.000000Z"],
}


def test_known_shapes_accept_and_refuse_exactly_as_the_general_path():
    # Each good event of its shape first (the shape becomes known), then the
    # same shape with one hostile value: the outcome must be the json
    # module's path's, which checks everything.
    goods = [conn(), conn(ppid=None, exe=None, sport=40000), conn(whitelisted="user rule"),
             conn(whitelisted=False), dict(conn(), v=True)]
    cases = 0
    for good in goods:
        for field, values in HOSTILE_VALUES.items():
            for value in values:
                if type(value) is not type(good[field]):   # another shape: not this test's
                    continue
                _reset()
                assert inputs.parse_line(_line(good)) == good
                assert eventcheck.KNOWN_SHAPES, "a good connection event's shape is known"
                line = _line(dict(good, **{field: value}))
                assert eventcheck.shape_of(json.loads(line)) in eventcheck.KNOWN_SHAPES
                assert _outcome(inputs.parse_line, line) == _general(line), line
                cases += 1
    assert cases > 300


def test_a_seeded_fuzz_of_known_shapes_agrees_with_the_general_path():
    _reset()
    rng = random.Random(1919)
    good = conn()
    inputs.parse_line(_line(good))
    pool = {k: v + [good[k]] * len(v) for k, v in HOSTILE_VALUES.items()}
    refused = accepted = 0
    for _ in range(3000):
        ev = dict(good, **{k: rng.choice(pool[k]) for k in rng.sample(sorted(pool), rng.randint(1, 3))})
        line = _line(ev)
        known = _outcome(inputs.parse_line, line)
        assert known == _general(line), line
        refused += known[0] == "raised"
        accepted += known[0] == "value"
    assert refused > 500 and accepted > 500


def test_shapes_that_are_not_flat_or_not_connections_are_never_known():
    _reset()
    for ev in (dict(conn(), signals={"stdio_socket": "fd 0"}), dict(conn(), extra=[1]),
               dict(conn(), score=1.5), {"v": 1, "type": "stats", "ts": conn()["ts"]},
               {"v": 1, "type": "flow", "ts": conn()["ts"], "src": "10.0.0.1"}):
        inputs.parse_line(_line(ev))
        eventcheck.remember_shape(ev, eventcheck.shape_of(ev))   # were it asked
    assert not eventcheck.KNOWN_SHAPES
    # Nested deeper than allowed behind a good event's keys: still refused.
    deep = dict(conn(), extra=json.loads("[" * 30 + "]" * 30))
    inputs.parse_line(_line(conn()))
    with pytest.raises(BadLine, match="nested deeper than 8 levels"):
        inputs.parse_line(_line(deep))


def test_a_stream_of_new_shapes_is_remembered_up_to_a_bound():
    _reset()
    for i in range(eventcheck.MAX_SHAPES + 200):
        inputs.parse_line(_line(dict(conn(), **{f"extra{i}": "x"})))
    assert len(eventcheck.KNOWN_SHAPES) == eventcheck.MAX_SHAPES


def test_times_of_known_shapes_are_read_and_refused_as_parse_iso_does(monkeypatch):
    # Any instant (years 1-9999), and the events' form with one to three
    # characters changed: the same outcome as the general path, and the
    # time the rules then read (event_seconds) is parse_iso's to the bit.
    # A local time zone that is not UTC: a time without an offset is UTC
    # to parse_iso, whatever the machine's zone.
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    _reset()
    rng = random.Random(9)
    inputs.parse_line(_line(conn()))
    alphabet = "0123456789.:-+TZz ,_１٣²\x00é"
    times = list(HOSTILE_VALUES["ts"])
    for _ in range(2000):
        t = datetime(1, 1, 1, tzinfo=timezone.utc) + timedelta(
            seconds=rng.randrange(315_000_000_000), microseconds=rng.randrange(1_000_000))
        times.append(t.strftime("%Y-%m-%dT%H:%M:%S.%fZ"))
        odd = list(times[-1])
        for _ in range(rng.randint(1, 3)):
            odd[rng.randrange(len(odd))] = rng.choice(alphabet)
        times.append("".join(odd))
    kinds = set()
    for ts in times:
        line = _line(dict(conn(), ts=ts))
        known = _outcome(inputs.parse_line, line)
        if known[0] == "value":
            assert repr(eventcheck.event_seconds(ts)) == repr(parse_iso(ts)), ts   # (repr: to the bit)
        assert known == _general(line), ts
        kinds.add(known[0])
    assert kinds == {"value", "raised"}
    monkeypatch.delenv("TZ")
    time.tzset()


def test_a_wrong_type_is_another_shape_refused_in_the_same_words():
    _reset()
    inputs.parse_line(_line(conn()))
    for ev in (conn(pid=True), conn(dport=False), conn(uid=1.0), conn(daddr=None), dict(conn(), ts=None),
               dict(conn(), v="1"), dict(conn(), type=None), conn(exe=0), conn(whitelisted=3)):
        line = _line(ev)
        assert eventcheck.shape_of(json.loads(line)) not in eventcheck.KNOWN_SHAPES
        known = _outcome(inputs.parse_line, line)
        assert known[0] == "raised" and known == _general(line), line
