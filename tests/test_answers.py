"""llm/answers.py: the one reader of a model's JSON answer, shared by
verdicts and rule proposals."""

import pytest

from netsentinel.analyzer.verdict import InvalidVerdict, parse_llm_verdict
from netsentinel.errors import InvalidAnswer, NetSentinelError
from netsentinel.llm.answers import parse_json_answer
from netsentinel.proposals import PROPOSAL_SCHEMA

SCHEMA = {"type": "object", "required": ["n"], "properties": {"n": {"type": "integer"}}}


@pytest.mark.parametrize("text", [
    '{"n": 1}',
    '<think>maybe {"n": 2}?</think>\n```json\n{"n": 1}\n```',
    'Sure! Here it is: {"n": 1} and a trailing {"n": 3}',
])
def test_first_object_after_think_blocks_and_prose(text):
    assert parse_json_answer(text, SCHEMA) == {"n": 1}


@pytest.mark.parametrize("text, words", [
    ("", "empty answer"), ("no braces here", "no JSON object"), ('{"n": ', "not valid JSON"),
    ('{"n": "one"}', "fails the schema at n"), ("<think>{\"n\": 1}</think>", "no JSON object"),
])
def test_unusable_answers_say_why_in_one_line(text, words):
    with pytest.raises(InvalidAnswer, match=words) as exc:
        parse_json_answer(text, SCHEMA)
    assert "\n" not in str(exc.value) and isinstance(exc.value, NetSentinelError)


def test_verdicts_and_proposals_use_it_with_their_own_schema_and_error():
    good = ('{"level": " critical ", "category": "scan", "confidence": 0.9, "reason": "r",'
            ' "recommended_action": "a", "extra": 1}')
    assert parse_llm_verdict(good)["level"] == "CRITICAL"  # normalised before the check
    assert "extra" not in parse_llm_verdict(good)
    with pytest.raises(InvalidVerdict, match="fails the schema at level"):
        parse_llm_verdict(good.replace("critical", "severe"))
    with pytest.raises(InvalidAnswer, match="fails the schema at rules.0.action"):
        parse_json_answer('{"summary": "s", "rules": [{"action": "nuke", "reason": "r"}]}',
                          PROPOSAL_SCHEMA)
