"""jsonsafe: the one total parser for JSON other people write."""

import json

import pytest

from netsentinel import jsonsafe
from netsentinel.jsonsafe import JsonRefused


@pytest.mark.parametrize("text, words", [
    ('{"ttl_seconds": NaN}', "NaN is not a number JSON allows"),
    ('{"ttl_seconds": Infinity}', "Infinity is not a number"),
    ('[-Infinity]', "-Infinity is not a number"),
    ('{"ttl_seconds": 1e400}', "out of range"),
    ('[' + "9" * 5000 + ']', "too large"),
    ("[" * 100_000 + "]" * 100_000, "nested 100000 levels deep"),
    ('{"reason": "\\ud800"}', "lone surrogate"),
    ('{"\\udfff": 1}', "lone surrogate"),
    ('[{"ip": "1.2.3.4"', "invalid JSON at line 1"),
    ('', "empty"),
    ('[1] [2]', "extra data"),
])
def test_hostile_text_is_refused_with_one_line(text, words):
    with pytest.raises(JsonRefused) as exc:
        jsonsafe.loads(text)
    assert words in str(exc.value) and "\n" not in str(exc.value)


def test_size_is_checked_before_parsing():
    with pytest.raises(JsonRefused, match="more than the 10 allowed"):
        jsonsafe.loads(b"[" + b" " * 20 + b"]", max_bytes=10)


def test_bytes_that_are_not_utf8_are_refused():
    with pytest.raises(JsonRefused, match="not UTF-8"):
        jsonsafe.loads(b'["\xff\xfe"]')


def test_brackets_inside_strings_do_not_count_as_depth():
    value = {"reason": "[[[[" * 100 + '\\"{{{' * 100}
    assert jsonsafe.loads(json.dumps(value)) == value


def test_good_json_parses_as_the_stdlib_does():
    text = '[{"action": "ban", "ip": "2001:db8::1", "ttl_seconds": 3600.5, "n": -3, "ok": true}]'
    assert jsonsafe.loads(text) == json.loads(text)
    assert jsonsafe.loads(json.dumps({"r": "caf\u00e9 \U0001f600"})) == {"r": "caf\u00e9 \U0001f600"}


def test_values_one_after_another_are_all_read():
    # What `echo '[...]' >> file` twice leaves behind.
    assert jsonsafe.loads_many('[{"a": 1}]\n[{"a": 2}]\n{"a": 3}\n') == [[{"a": 1}], [{"a": 2}], {"a": 3}]
    assert jsonsafe.loads_many("  \n") == []
