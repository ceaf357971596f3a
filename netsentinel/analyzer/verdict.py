"""Verdicts: the levels, the JSON schema an LLM answer must satisfy, parsing
an answer out of model text, and combining it with the rule verdict.

The one invariant: an LLM may raise the level a rule assigned (and say
why), never lower it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

import jsonschema

from ..levels import LEVELS, rank

# What the model must answer (also quoted in the prompt).
VERDICT_SCHEMA = {
    "type": "object",
    "required": ["level", "category", "confidence", "reason", "recommended_action"],
    "properties": {
        "level": {"enum": list(LEVELS)},
        "category": {"type": "string", "minLength": 1, "maxLength": 64},
        "confidence": {"type": "number", "minimum": 0, "maximum": 1},
        "reason": {"type": "string", "minLength": 1, "maxLength": 600},
        "recommended_action": {"type": "string", "minLength": 1, "maxLength": 300},
    },
}
_VALIDATOR = jsonschema.Draft202012Validator(VERDICT_SCHEMA)
_THINK = re.compile(r"<think>.*?</think>", re.S | re.I)


class InvalidVerdict(ValueError):
    """A model answer that is not a valid verdict; str() is one line."""


@dataclass
class Verdict:
    level: str
    category: str
    confidence: float
    reason: str
    recommended_action: str
    verdict_source: str = "rules"  # rules | llm | rules_fallback
    rule_ids: list = field(default_factory=list)
    rule_level: str | None = None
    llm_level: str | None = None
    note: str | None = None  # why a fallback happened, or what the LLM said that was not taken

    def as_dict(self) -> dict:
        # By hand: dataclasses.asdict deep-copies, and this runs per event.
        return {"level": self.level, "category": self.category, "confidence": self.confidence,
                "reason": self.reason, "recommended_action": self.recommended_action,
                "verdict_source": self.verdict_source, "rule_ids": list(self.rule_ids),
                "rule_level": self.rule_level, "llm_level": self.llm_level, "note": self.note}


def parse_llm_verdict(text: str) -> dict:
    """The first JSON object in a model's text, validated against
    VERDICT_SCHEMA. Tolerates <think> blocks, code fences and prose around
    the object; level is upper-cased. Raises InvalidVerdict."""
    if not isinstance(text, str) or not text.strip():
        raise InvalidVerdict("empty answer")
    body = _THINK.sub("", text)
    start = body.find("{")
    if start < 0:
        raise InvalidVerdict(f"no JSON object in answer: {_clip(text)}")
    try:
        obj, _ = json.JSONDecoder().raw_decode(body[start:])
    except json.JSONDecodeError as e:
        raise InvalidVerdict(f"answer is not valid JSON ({e.msg}): {_clip(text)}") from None
    if not isinstance(obj, dict):
        raise InvalidVerdict("answer is not a JSON object")
    if isinstance(obj.get("level"), str):
        obj["level"] = obj["level"].strip().upper()
    errors = sorted(_VALIDATOR.iter_errors(obj), key=lambda e: list(e.path))
    if errors:
        e = errors[0]
        where = ".".join(str(p) for p in e.path) or "answer"
        raise InvalidVerdict(f"verdict fails the schema at {where}: {_clip(e.message)}")
    return {k: obj[k] for k in VERDICT_SCHEMA["required"]}


def combine(rule: Verdict, llm: dict) -> Verdict:
    """The LLM's answer over the rule verdict: level = the higher of the
    two; the LLM's words are used when it raised or matched the level."""
    llm_level = llm["level"]
    if rank(llm_level) >= rank(rule.level):
        out = Verdict(level=llm_level, category=llm["category"],
                      confidence=float(llm["confidence"]), reason=llm["reason"],
                      recommended_action=llm["recommended_action"], verdict_source="llm",
                      rule_ids=list(rule.rule_ids), rule_level=rule.level, llm_level=llm_level)
        if rank(llm_level) > rank(rule.level):
            out.note = f"LLM raised {rule.level} to {llm_level}"
        return out
    return Verdict(level=rule.level, category=rule.category, confidence=rule.confidence,
                   reason=rule.reason, recommended_action=rule.recommended_action,
                   verdict_source="llm", rule_ids=list(rule.rule_ids), rule_level=rule.level,
                   llm_level=llm_level,
                   note=f"LLM said {llm_level} ({_clip(llm['reason'], 200)}); "
                        f"rules keep {rule.level}")


def fallback(rule: Verdict, why: str) -> Verdict:
    """The rule verdict, marked as standing in for an LLM answer that did not come."""
    out = Verdict(**rule.as_dict())
    out.verdict_source = "rules_fallback"
    out.rule_level = rule.level
    out.note = why
    return out


def _clip(text: str, n: int = 160) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= n else text[: n - 1] + "…"
