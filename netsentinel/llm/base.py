"""What every LLM backend is: a class that turns chat messages into the
model's text, and the one error kind the analyzer counts (BackendError).
The backends themselves are in backends.py (network services) and hf.py
(local transformers models)."""

from __future__ import annotations

from ..errors import NetSentinelError
from .answers import parse_json_answer
from .config import resolve_model
from .env import resolve_host


class BackendError(NetSentinelError):
    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


class Backend:
    name = "?"

    def __init__(self, cfg: dict):
        self.model = resolve_model(cfg, self.name)
        self.host = resolve_host(cfg, self.name)

    def describe(self) -> str:
        return f"{self.name} {self.model}" + (f" at {self.host}" if self.host else "")

    def ask(self, messages: list[dict], cfg: dict, schema: dict | None = None) -> str:
        """The model's text. schema: the JSON schema the answer must meet,
        for backends that can constrain decoding to it."""
        raise NotImplementedError

    def ask_json(self, messages: list[dict], cfg: dict, schema: dict) -> dict:
        """The answer as a JSON object valid against schema; raises
        BackendError, or errors.InvalidAnswer for an unusable answer."""
        return parse_json_answer(self.ask(messages, cfg, schema), schema)

    def close(self) -> None:
        pass


def one_line(e: BaseException) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return text[:300]
