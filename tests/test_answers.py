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


def test_a_verdict_entry_is_its_verdict_between_the_id_time_backend_and_event():
    # Built in one literal for speed: the same fields, in the same order, as
    # the general path (the verdict's as_dict() merged) gives.
    from netsentinel.analyzer.sinks import RecordsSink
    from netsentinel.analyzer.verdict import Verdict
    v = Verdict(level="HIGH", category="suspicious_port", confidence=0.8, reason="r",
                recommended_action="review", rule_ids=["a", "b"], rule_level="HIGH", note="n")
    ev = {"pid": 1}
    fast = RecordsSink.make_entry(ev, v, "rules", False, "2026-12-02T00:00:00.000000Z")
    slow = RecordsSink.make_entry(ev, v.as_dict(), "rules", False, "2026-12-02T00:00:00.000000Z")
    assert list(fast) == list(slow) and {**fast, "id": 0} == {**slow, "id": 0}
    assert fast["rule_ids"] == ["a", "b"] and fast["rule_ids"] is not v.rule_ids
