"""analyzer/inputs.py reads a line with orjson where that gives the json
module's reading exactly, and with the json module (jsonsafe's hooks)
otherwise: whichever path a line takes, the same event comes out, or the
same refusal in the same words. Checked over the hostile lines of the
analyzer's tests, hand-made edge cases and a seeded fuzz of real events."""

from __future__ import annotations

import json
import random

import orjson

from analyzer_support import conn
from test_analyzer_hostile import HOSTILE_LINES, flow

from netsentinel.analyzer import inputs
from netsentinel.analyzer.eventcheck import BadLine

EDGE = [
    b'{"a":1}', b'[1,2]', b'"text"', b'12', b'null',
    b'{"a":1,"a":2}',                                    # duplicate keys: the last one
    b'{"a":-0}', b'{"a":-0.0}', b'{"a":1e5}', b'{"a":2.5e-324}', b'{"a":1e-400}',
    b'{"a":1e400}', b'{"a":NaN}', b'{"a":Infinity}', b'{"a":-Infinity}',
    b'{"a":18446744073709551615}', b'{"a":18446744073709551616}',     # 2**64 - 1, 2**64
    b'{"a":-9223372036854775808}', b'{"a":-9223372036854775809}',
    b'{"a":123456789012345678901234567890}', b'{"a":"1234567890123456789012"}',
    b'{"a":0.12345678901234567890123}',
    b'{"a":"\\ud800"}', b'{"a":"\\ud83d\\ude00"}', b'{"a":"\\udc00\\ud800"}',
    b'{"a":"\xed\xa0\x80"}', b'{"a":"\xff"}', b'\xef\xbb\xbf{"a":1}',
    b'{"a":"x\x01y"}', b'{"a":1}\x00', b'{"a":1}\x0b', b'{"a":\t1}\r\n', b' {"a":1} \n',
    b'{"a":01}', b'{"a":1.}', b'{"a":.5}', b'{"a":+1}', b'{"a":"\\x41"}', b'{"a":"\\/\\u00e9"}',
    b'[' * 9 + b']' * 9, b'[' * 8 + b']' * 8, b'[' * 2000 + b']' * 2000, b'{"a":[' * 9 + b']}' * 9,
]


def _outcome(parse, line: bytes):
    try:
        return "event", repr(parse(line))   # repr: 1 vs 1.0, -0.0 vs 0.0, key order
    except BadLine as e:
        return "refused", str(e)


def _corpus() -> list[bytes]:
    rng = random.Random(19)
    base = [json.dumps(conn(i, pid=1000 + i, dport=[22, 443, 4444][i % 3])).encode() for i in range(20)]
    base += [json.dumps(flow()).encode(), json.dumps(dict(conn(), signals={"stdio_socket": "fd 0"})).encode()]
    out = list(EDGE) + base + [t.encode("utf-8", "surrogatepass") for t, _ in HOSTILE_LINES]
    alphabet = b'{}[]",:0123456789.eE+-\\u \x00\xff\xed\x80truefalsenull'
    for _ in range(6000):
        b = bytearray(rng.choice(base))
        for _ in range(rng.randint(1, 4)):
            i = rng.randrange(len(b))
            op = rng.random()
            if op < 0.4:
                b[i] = rng.choice(alphabet)
            elif op < 0.7:
                b[i:i] = bytes(rng.choice(alphabet) for _ in range(rng.randint(1, 25)))
            else:
                del b[i:i + rng.randint(1, 5)]
        out.append(bytes(b))
    return out


def _orjson_reads(line: bytes) -> bool:
    """Does parse_line take orjson's reading of line (not the json module's)?"""
    try:
        orjson.loads(line)
    except orjson.JSONDecodeError:
        return False
    return b"0" * 19 not in line.translate(inputs._DIGITS_ONLY)


def test_fast_and_json_module_paths_agree():
    fast_taken = 0
    for line in _corpus():
        got = _outcome(inputs.parse_line, line)
        want = _outcome(lambda b: inputs.parse_line(b, fast=False), line)
        assert got == want, line[:200]
        fast_taken += _orjson_reads(line)
    # Both paths were really exercised.
    assert fast_taken > 100 and fast_taken < len(_corpus()) - 100


def test_a_long_digit_run_takes_the_json_module_path():
    # orjson would read 2**64 as a float; the json module keeps the int (then
    # refused by the schema, in the json module's words).
    line = json.dumps(conn(pid=2 ** 64)).encode()
    assert inputs._unplain(line, orjson.loads(line)) is None
    assert _outcome(inputs.parse_line, line) == ("refused", f"connection event: pid {2 ** 64} "
                                                           "outside 0-4294967295")


def test_field_types_remembered_by_shape_refuse_the_same():
    # eventcheck remembers the field types of events found right; a wrong
    # one is refused in the same words whether or not right ones came first.
    from netsentinel.analyzer import eventcheck
    wrong = [conn(pid=True), conn(dport="22"), conn(exe=5), conn(ppid=1.5), conn(sport=False),
             conn(comm=None), conn(saddr=["10.0.0.1"])]
    eventcheck._GOOD_SHAPES.clear()
    eventcheck.KNOWN_SHAPES.clear()   # (those parse_line's shortcut knows: tests/test_inputs_known.py)
    fresh = [_outcome(inputs.parse_line, json.dumps(ev).encode()) for ev in wrong]
    for ev in (conn(), conn(ppid=None, exe=None, sport=40000)):
        assert _outcome(inputs.parse_line, json.dumps(ev).encode())[0] == "event"
    assert len(eventcheck._GOOD_SHAPES) == 2
    after = [_outcome(inputs.parse_line, json.dumps(ev).encode()) for ev in wrong]
    assert after == fresh and all(kind == "refused" for kind, _ in after)
