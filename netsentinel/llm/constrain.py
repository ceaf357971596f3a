"""Grammar-constrained decoding for the local (transformers) backend, with
lm-format-enforcer: at each step only the tokens that keep the answer a
prefix of a JSON document valid against the schema are allowed, so even a
135M-parameter model answers with a schema-valid object.

Why lm-format-enforcer (docs/ANALYZER.md has the comparison): pure Python,
two small dependencies (interegular, pydantic, which we already have),
JSON Schema in and a per-step allowed-token list out, nothing compiled and
no pinned transformers range. Its own transformers shim imports a module
transformers 5 removed, so the ~20 lines of glue it provides are here,
using only its core API (TokenEnforcer, JsonSchemaParser)."""

from __future__ import annotations

from typing import Callable


def tokenizer_data(tokenizer):
    """What lm-format-enforcer needs to know of a tokenizer: every regular
    token's text and whether it starts a word. Built once per model (a few
    seconds for a 50k vocabulary)."""
    from lmformatenforcer import TokenEnforcerTokenizerData

    special = set(tokenizer.all_special_ids)
    zero = tokenizer.encode("0", add_special_tokens=False)[-1]
    regular = []
    for idx in range(len(tokenizer)):
        if idx in special:
            continue
        # Decoding after "0" keeps a word-start token's leading space.
        after_zero = tokenizer.decode([zero, idx])[1:]
        regular.append((idx, after_zero, len(after_zero) > len(tokenizer.decode([idx]))))

    def decode(ids: list[int]) -> str:
        return tokenizer.decode(ids).rstrip("\ufffd")

    return TokenEnforcerTokenizerData(regular, decode, tokenizer.eos_token_id, False,
                                      len(tokenizer))


def decodable(schema: dict) -> dict:
    """schema as lm-format-enforcer can enforce it: it checks a number's
    syntax but not its bounds, so a bounded number becomes a choice of ten
    steps (a confidence of 0, 0.1, ... 1). The answer is still validated
    against the original schema."""
    if not isinstance(schema, dict):
        return schema
    out = {k: (decodable(v) if isinstance(v, dict) else v) for k, v in schema.items()}
    if isinstance(schema.get("properties"), dict):
        out["properties"] = {k: decodable(v) for k, v in schema["properties"].items()}
    if schema.get("type") == "number" and "minimum" in schema and "maximum" in schema:
        lo, hi = schema["minimum"], schema["maximum"]
        out = {"enum": sorted({round(lo + (hi - lo) * i / 10, 4) for i in range(11)},
                              reverse=True)}
    return out


def allowed_tokens_fn(data, schema: dict, prefill: str, prompt_len: int) -> Callable:
    """prefix_allowed_tokens_fn for generate(): the answer, after `prefill`
    (already at the end of the prompt), must complete a JSON document valid
    against schema. prompt_len: tokens before the answer, prefill included."""
    from lmformatenforcer import CharacterLevelParserConfig, JsonSchemaParser, TokenEnforcer

    # Fields in the schema's order, as the prompt's examples show them, and
    # no runs of whitespace between them: tokens a small model would waste.
    parser = JsonSchemaParser(decodable(schema), config=CharacterLevelParserConfig(
        alphabet=data.tokenizer_alphabet, max_consecutive_whitespaces=1,
        force_json_field_order=True))
    for ch in prefill:
        parser = parser.add_character(ch)
    enforcer = TokenEnforcer(data, parser)
    # The enforcer treats the first sequence it sees as the prompt; it is
    # given only the answer's tokens, after a fixed one-token stand-in
    # prompt, so a long event never costs a prefix walk.
    anchor = [data.eos_token_id if isinstance(data.eos_token_id, int) else data.eos_token_id[0]]

    def fn(batch_id: int, ids) -> list[int]:
        return enforcer.get_allowed_tokens(anchor + ids[prompt_len:].tolist()).allowed_tokens

    return fn
