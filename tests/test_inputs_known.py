"""The analyzer's shortcuts for the lines it reads most, against the general
path on hostile input: a connection event of a shape eventcheck knows (keys
and value types of one found right) has only its values checked, and an
event time of the second read last is read from a per-second cache. Neither
may accept, refuse or read anything differently: each is compared with the
general path (the json module, parse_iso) over values chosen to hurt."""

from __future__ import annotations

import json
import random
from datetime import datetime, timedelta, timezone

import pytest
from analyzer_support import conn

from netsentinel import timefmt
from netsentinel.analyzer import eventcheck, inputs
from netsentinel.analyzer.eventcheck import BadLine
from netsentinel.timefmt import parse_event_time, parse_iso

SECOND = "2026-12-02T16:02:14"
# Texts one character or a form away from the events' own: digits that
# int() or isdigit() take and fromisoformat does not, other separators and
# offsets, impossible dates and times, other lengths.
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
    return "value", v.hex() if isinstance(v, float) else v


def _reset():
    timefmt._second = ("-" * 28, 0)
    eventcheck._last_ts = ("", None)
    eventcheck.KNOWN_SHAPES.clear()
    eventcheck._GOOD_SHAPES.clear()


def test_event_times_read_from_the_second_cache_are_parse_isos_to_the_bit():
    _reset()
    rng = random.Random(9)
    starts = [datetime(2026, 12, 2, 16, 2, 14, tzinfo=timezone.utc), datetime(1, 1, 1, tzinfo=timezone.utc),
              datetime(9999, 12, 31, 23, 59, 58, tzinfo=timezone.utc),
              datetime(1969, 12, 31, 23, 59, 59, tzinfo=timezone.utc),
              datetime(1970, 1, 1, tzinfo=timezone.utc)]
    starts += [datetime(1, 1, 1, tzinfo=timezone.utc) + timedelta(seconds=rng.randrange(315_000_000_000))
               for _ in range(300)]
    hits = 0
    for start in starts:
        for s in range(2):
            second = (start + timedelta(seconds=s)).strftime("%Y-%m-%dT%H:%M:%S")
            for us in [0, 1, 999_999, 500_000, *(rng.randrange(1_000_000) for _ in range(20))]:
                text = f"{second}.{us:06d}Z"
                hits += timefmt._second[0] == second
                assert _outcome(parse_event_time, text) == _outcome(parse_iso, text), text
    assert hits > 10_000   # the cache really answered


@pytest.mark.parametrize("primed", [SECOND + ".000001Z", "2026-12-02T16:02:13.999999Z"])
def test_odd_event_times_read_or_refused_as_parse_iso_does(primed):
    rng = random.Random(primed)
    alphabet = "0123456789.:-+TZz ,_１٣²\x00é"
    texts = list(ODD_TIMES)
    for _ in range(5000):   # one to three characters of the events' form changed
        t = list(SECOND + f".{rng.randrange(1_000_000):06d}Z")
        for _ in range(rng.randint(1, 3)):
            t[rng.randrange(len(t))] = rng.choice(alphabet)
        texts.append("".join(t))
    for text in texts:
        _reset()
        parse_event_time(primed)
        remembered = timefmt._second
        assert _outcome(parse_event_time, text) == _outcome(parse_iso, text), text
        # Only the events' own form is remembered (not a week date, a space for the T, ...).
        if timefmt._second != remembered:
            assert timefmt._SECOND_TEXT.fullmatch(text[:19]) and text[19] == "." and text[26:] == "Z", text
    for bad in (None, 5, b"2026-12-02T16:02:14.000001Z"):
        assert _outcome(parse_event_time, bad) == _outcome(parse_iso, bad)


def _general(line: bytes):
    """parse_line's outcome through the json module, no shape known and
    every time read by parse_iso itself."""
    saved = set(eventcheck.KNOWN_SHAPES), eventcheck.parse_event_time
    eventcheck.KNOWN_SHAPES.clear()
    eventcheck.parse_event_time, eventcheck._last_ts = parse_iso, ("", None)
    try:
        return _outcome(lambda b: inputs.parse_line(b, fast=False), line)
    finally:
        eventcheck.KNOWN_SHAPES.update(saved[0])
        eventcheck.parse_event_time, eventcheck._last_ts = saved[1], ("", None)


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
