"""Verdicts: the JSON schema an LLM answer must satisfy, reading one out of
model text (llm/answers.py), and combining it with the rule verdict.

The one invariant: an LLM may raise the level a rule assigned (and say
why), never lower it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import InvalidAnswer
from ..levels import LEVELS, rank
from ..llm.answers import clip, parse_json_answer



def _schema(category: int, reason: int, action: int) -> dict:
    return {
        "type": "object",
        "required": ["level", "category", "confidence", "reason", "recommended_action"],
        "properties": {
            "level": {"enum": list(LEVELS)},
            "category": {"type": "string", "minLength": 1, "maxLength": category},
            "confidence": {"type": "number", "minimum": 0, "maximum": 1},
            "reason": {"type": "string", "minLength": 1, "maxLength": reason},
            "recommended_action": {"type": "string", "minLength": 1, "maxLength": action},
        },
    }


# What the model is asked for (ollama format, OpenAI response_format,
# constrained decoding): short strings, so a constrained small model stops
# well inside max_tokens.
VERDICT_SCHEMA = _schema(40, 200, 100)
# What is accepted: a service that ignores the schema may write a longer reason.
ACCEPT_SCHEMA = _schema(64, 600, 300)


class InvalidVerdict(InvalidAnswer):
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
    # The reason as the LLM is shown it, when it must differ from `reason`: a
    # scan's without pids and exact counts (prompt.question_key is what the
    # model sees). Never stored: `reason` is what people read.
    asked_reason: str | None = None

    def as_dict(self) -> dict:
        # By hand: dataclasses.asdict deep-copies, and this runs per event.
        return {"level": self.level, "category": self.category, "confidence": self.confidence,
                "reason": self.reason, "recommended_action": self.recommended_action,
                "verdict_source": self.verdict_source, "rule_ids": list(self.rule_ids),
                "rule_level": self.rule_level, "llm_level": self.llm_level, "note": self.note}

    def entry(self, id_: str, ts: str, backend: str, event: dict) -> dict:
        """A verdict entry of records (sinks.RecordsSink.make_entry): as_dict()'s
        fields between the id and time and the backend and event, built in
        one literal (per event: the merge of as_dict() into one cost twice this)."""
        return {"id": id_, "ts": ts, "level": self.level, "category": self.category,
                "confidence": self.confidence, "reason": self.reason,
                "recommended_action": self.recommended_action,
                "verdict_source": self.verdict_source, "rule_ids": list(self.rule_ids),
                "rule_level": self.rule_level, "llm_level": self.llm_level, "note": self.note,
                "backend": backend, "event": event}

    def asked(self) -> dict:
        """What prompt.describe takes of this rule verdict."""
        return {"level": self.level, "category": self.category,
                "reason": self.reason if self.asked_reason is None else self.asked_reason}


def _upper_level(obj: dict) -> None:
    if isinstance(obj.get("level"), str):
        obj["level"] = obj["level"].strip().upper()


def parse_llm_verdict(text: str) -> dict:
    """The verdict in a model's text (llm/answers.py: first JSON object,
    checked against ACCEPT_SCHEMA); level is upper-cased first. Raises
    InvalidVerdict."""
    obj = parse_json_answer(text, ACCEPT_SCHEMA, error=InvalidVerdict, prepare=_upper_level)
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
                   note=f"LLM said {llm_level} ({clip(llm['reason'], 200)}); "
                        f"rules keep {rule.level}")


def fallback(rule: Verdict, why: str) -> Verdict:
    """The rule verdict, marked as standing in for an LLM answer that did not come."""
    out = Verdict(**rule.as_dict())
    out.verdict_source = "rules_fallback"
    out.rule_level = rule.level
    out.note = why
    return out

