"""Reading a model's answer: the first JSON object in its text (after any
<think> block, code fence or prose around it), checked against the JSON
schema the caller asked for. Used for verdicts (analyzer/verdict.py) and
rule proposals (netsentinel/proposals.py)."""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Callable

from ..errors import InvalidAnswer

if TYPE_CHECKING:
    import jsonschema

_THINK = re.compile(r"<think>.*?</think>", re.S | re.I)
_VALIDATORS: dict[int, "jsonschema.Draft202012Validator"] = {}


def clip(text: object, n: int = 160) -> str:
    """One line of at most n characters, for an error message."""
    text = " ".join(str(text).split())
    return text if len(text) <= n else text[: n - 1] + "…"


def _validator(schema: dict) -> "jsonschema.Draft202012Validator":
    v = _VALIDATORS.get(id(schema))
    if v is None or v.schema is not schema:
        # Imported on the first answer read: a rules-only analyzer never
        # pays the ~40 ms jsonschema takes to import.
        import jsonschema
        v = _VALIDATORS[id(schema)] = jsonschema.Draft202012Validator(schema)
    return v


def parse_json_answer(text: str, schema: dict, *, error: type[Exception] = InvalidAnswer,
                      prepare: Callable[[dict], None] | None = None) -> dict:
    """The first JSON object in text, valid against schema; raises `error`
    with a one-line reason. prepare(obj) may normalise the object (say,
    upper-case a level) before it is checked."""
    if not isinstance(text, str) or not text.strip():
        raise error("empty answer")
    body = _THINK.sub("", text)
    start = body.find("{")
    if start < 0:
        raise error(f"no JSON object in the answer: {clip(text)}")
    try:
        obj, _ = json.JSONDecoder().raw_decode(body[start:])
    except json.JSONDecodeError as e:
        raise error(f"answer is not valid JSON ({e.msg}): {clip(text)}") from None
    if not isinstance(obj, dict):
        raise error("answer is not a JSON object")
    if prepare is not None:
        prepare(obj)
    errors = sorted(_validator(schema).iter_errors(obj), key=lambda e: list(e.path))
    if errors:
        where = ".".join(str(p) for p in errors[0].path) or "answer"
        raise error(f"answer fails the schema at {where}: {clip(errors[0].message)}")
    return obj
