"""LLM backends: each turns chat messages into the model's text, through
its real client library, with the configured timeout and no retries (a
retry would only make a late answer later; the rules stand in instead).

  zhipuai      the zhipuai SDK; ZHIPUAI_API_KEY, ZHIPUAI_BASE_URL (.env)
  ollama       the ollama client; OLLAMA_HOST (default http://localhost:11434)
  openai       any OpenAI-compatible /v1/chat/completions (vLLM, DeepSeek,
               LM Studio) with plain httpx; --base-url, OPENAI_API_KEY
  huggingface  transformers: a local model directory, .gguf file or cached
               hub model, grammar-constrained (hf.py)

Structured output is asked for wherever the service offers it: ollama
`format` (the JSON schema), OpenAI-compatible `response_format` json_schema
(json_object where the server refuses the schema), zhipuai JSON mode, and
constrained decoding for local models. Answers are still checked against
the schema: a server may ignore the request.

Every failure is a BackendError with a one-line message and a kind
(timeout, http, connect, config, error) that the analyzer counts.
"""

from __future__ import annotations

import os
import threading
from typing import Callable

from .base import Backend, BackendError, one_line
from .config import LLM_BACKENDS
from .env import load_env
from .hf import HuggingFaceBackend

__all__ = ["Backend", "BackendError", "BackendManager", "HuggingFaceBackend", "one_line"]


class ZhipuAIBackend(Backend):
    name = "zhipuai"

    def __init__(self, cfg: dict):
        super().__init__(cfg)
        load_env()
        key = os.environ.get("ZHIPUAI_API_KEY")
        if not key:
            raise BackendError("config", "zhipuai: ZHIPUAI_API_KEY is not set (put it in .env)")
        from zhipuai import ZhipuAI

        self.client = ZhipuAI(api_key=key, base_url=self.host, max_retries=0,
                              timeout=cfg["timeout_seconds"])

    def ask(self, messages: list[dict], cfg: dict, schema: dict | None = None) -> str:
        import httpx
        import zhipuai

        try:
            resp = self.client.chat.completions.create(
                model=self.model, messages=messages, temperature=cfg["temperature"],
                max_tokens=cfg["max_tokens"], timeout=cfg["timeout_seconds"],
                # JSON mode: zhipuai takes no schema, only "answer one JSON object".
                **({"response_format": {"type": "json_object"}} if schema is not None else {}))
        except (zhipuai.APITimeoutError, httpx.TimeoutException) as e:
            raise BackendError("timeout", f"zhipuai: no answer within {cfg['timeout_seconds']:g}s") from e
        except zhipuai.APIStatusError as e:
            raise BackendError("http", f"zhipuai: HTTP {e.status_code}: {one_line(e)}") from e
        except zhipuai.APIConnectionError as e:
            raise BackendError("connect", f"zhipuai at {self.host}: {one_line(e)}") from e
        except Exception as e:  # the SDK raises plain errors on odd bodies
            raise BackendError("error", f"zhipuai: {type(e).__name__}: {one_line(e)}") from e
        try:
            return resp.choices[0].message.content or ""
        except (AttributeError, IndexError, TypeError) as e:
            raise BackendError("error", "zhipuai: answer has no choices[0].message") from e


class OllamaBackend(Backend):
    name = "ollama"

    def __init__(self, cfg: dict):
        super().__init__(cfg)
        import ollama

        self.client = ollama.Client(host=self.host, timeout=cfg["timeout_seconds"])
        # qwen3 and other thinking models answer faster without the reasoning
        # pass; models without the capability refuse the flag (HTTP 400), so
        # it is dropped after the first refusal.
        self.think_flag = True

    def ask(self, messages: list[dict], cfg: dict, schema: dict | None = None) -> str:
        import httpx
        import ollama

        # ollama constrains decoding to the schema asked for (the verdict or a
        # rule proposal); without one it answers free text.
        kwargs = dict(model=self.model, messages=messages, format=schema,
                      options={"temperature": cfg["temperature"], "num_predict": cfg["max_tokens"]})
        think = self.think_flag
        try:
            try:
                resp = self.client.chat(**kwargs, **({"think": False} if think else {}))
            except ollama.ResponseError as e:
                if think and e.status_code == 400 and "think" in str(e).lower():
                    self.think_flag = False
                    resp = self.client.chat(**kwargs)
                else:
                    raise
        except httpx.TimeoutException as e:
            raise BackendError("timeout", f"ollama: no answer within {cfg['timeout_seconds']:g}s") from e
        except ollama.ResponseError as e:
            raise BackendError("http", f"ollama: HTTP {e.status_code}: {one_line(e.error)}") from e
        except ConnectionError as e:
            raise BackendError("connect", f"ollama at {self.host}: not reachable") from e
        except Exception as e:  # e.g. pydantic validation of an odd body
            raise BackendError("error", f"ollama: {type(e).__name__}: {one_line(e)}") from e
        return (resp.message.content if resp.message else "") or ""


class OpenAIBackend(Backend):
    name = "openai"

    def __init__(self, cfg: dict):
        super().__init__(cfg)
        import httpx

        load_env()
        headers = {}
        if os.environ.get("OPENAI_API_KEY"):
            headers["Authorization"] = f"Bearer {os.environ['OPENAI_API_KEY']}"
        self.client = httpx.Client(base_url=self.host.rstrip("/") + "/", headers=headers)
        # Set once the server refuses a json_schema response_format: from then
        # on it is asked for JSON mode only (one request per question, not two).
        self.json_object_only = False

    def ask(self, messages: list[dict], cfg: dict, schema: dict | None = None) -> str:
        import httpx

        body = {"model": self.model, "messages": messages, "temperature": cfg["temperature"],
                "max_tokens": cfg["max_tokens"], "stream": False}
        formats = [None]
        if schema is not None:
            # The schema where the server supports it (vLLM, LM Studio, OpenAI);
            # plain JSON mode where it answers 4xx to the schema (DeepSeek, older servers).
            formats = [{"type": "json_schema",
                        "json_schema": {"name": "answer", "schema": schema}},
                       {"type": "json_object"}]
            if self.json_object_only:
                formats = formats[1:]
        try:
            for i, fmt in enumerate(formats):
                if fmt is not None:
                    body["response_format"] = fmt
                r = self.client.post("chat/completions", json=body, timeout=cfg["timeout_seconds"])
                if fmt is not None and fmt["type"] == "json_schema" and 400 <= r.status_code < 500 \
                        and r.status_code not in (401, 403, 404, 429) and i + 1 < len(formats):
                    self.json_object_only = True
                    continue
                r.raise_for_status()
                return r.json()["choices"][0]["message"]["content"] or ""
            raise BackendError("error", "openai: no request was made")  # unreachable
        except httpx.TimeoutException as e:
            raise BackendError("timeout", f"openai: no answer within {cfg['timeout_seconds']:g}s") from e
        except httpx.HTTPStatusError as e:
            raise BackendError("http", f"openai: HTTP {e.response.status_code} from {self.host}") from e
        except httpx.TransportError as e:
            raise BackendError("connect", f"openai at {self.host}: {one_line(e)}") from e
        except (ValueError, KeyError, IndexError, TypeError) as e:
            raise BackendError("error", f"openai: answer is not a chat completion: {one_line(e)}") from e

    def close(self) -> None:
        self.client.close()


BACKEND_CLASSES = {c.name: c for c in (ZhipuAIBackend, OllamaBackend, OpenAIBackend,
                                       HuggingFaceBackend)}


class BackendManager:
    """The backend in force for a config, built on first use (in a worker
    thread: loading a local model can take a while) and rebuilt when the
    backend-defining settings change."""

    KEYS = ("backend", "model", "host", "hf_device", "hf_quantize", "hf_gguf_file",
            "timeout_seconds")

    def __init__(self, warn: Callable[[str], None], progress: Callable[[str], None] | None = None):
        self.warn = warn
        self.progress = progress  # model-loading progress lines (the local backend)
        self._lock = threading.Lock()
        self._sig: tuple | None = None
        self._backend: Backend | None = None
        self._error: BackendError | None = None
        self.status = "not started"

    def get(self, cfg: dict, quiet: bool = False) -> Backend:
        """The backend for cfg (cfg["backend"] already resolved, not auto/rules).
        quiet: raise a failure without the "rule verdicts stand in" warning
        (at start, where the caller exits on it instead)."""
        sig = tuple(cfg.get(k) for k in self.KEYS)
        with self._lock:
            if sig != self._sig:
                old, self._backend, self._error, self._sig = self._backend, None, None, sig
                if old is not None:
                    old.close()
                cls = BACKEND_CLASSES.get(cfg["backend"])
                try:
                    if cls is None:
                        raise BackendError("config", f"unknown backend {cfg['backend']!r} "
                                           f"(known: {', '.join(LLM_BACKENDS)})")
                    try:
                        self._backend = cls(cfg, progress=self.progress) \
                            if cls is HuggingFaceBackend else cls(cfg)
                    except BackendError:
                        raise
                    except Exception as e:  # e.g. a model that fails to load in torch
                        raise BackendError("config", f"{cfg['backend']}: {type(e).__name__}: "
                                           f"{one_line(e)}") from e
                    self.status = f"ok: {self._backend.describe()}"
                except BackendError as e:
                    self._error = e
                    self.status = f"error: {e}"
                    if not quiet:
                        self.warn(f"backend {cfg['backend']}: {e}; rule verdicts stand in")
            if self._backend is None:
                raise self._error or BackendError("config", "no backend")
            return self._backend

    def mark(self, ok: bool, message: str = "") -> None:
        """Keep the status line honest after each call."""
        if self._backend is None:
            return
        self.status = f"ok: {self._backend.describe()}" if ok else f"failing: {message}"
