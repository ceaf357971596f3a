"""LLM backends: each turns chat messages into the model's text, through
its real client library, with the configured timeout and no retries (a
retry would only make a late answer later; the rules stand in instead).

  zhipuai      the zhipuai SDK; ZHIPUAI_API_KEY, ZHIPUAI_BASE_URL (.env)
  ollama       the ollama client; OLLAMA_HOST (default http://localhost:11434)
  openai       any OpenAI-compatible /v1/chat/completions (vLLM, DeepSeek,
               LM Studio) with plain httpx; --base-url, OPENAI_API_KEY
  huggingface  transformers, a local or hub model, optional bitsandbytes

Every failure is a BackendError with a one-line message and a kind
(timeout, http, connect, config, error) that the analyzer counts.
"""

from __future__ import annotations

import os
import threading
from typing import Callable

from .config import (LLM_BACKENDS, load_env, probe_backend, resolve_host, resolve_model)


class BackendError(Exception):
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

    def ask(self, messages: list[dict], cfg: dict) -> str:
        raise NotImplementedError

    def close(self) -> None:
        pass


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return text[:300]


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

    def ask(self, messages: list[dict], cfg: dict) -> str:
        import httpx
        import zhipuai

        try:
            resp = self.client.chat.completions.create(
                model=self.model, messages=messages, temperature=cfg["temperature"],
                max_tokens=cfg["max_tokens"], timeout=cfg["timeout_seconds"])
        except (zhipuai.APITimeoutError, httpx.TimeoutException) as e:
            raise BackendError("timeout", f"zhipuai: no answer within {cfg['timeout_seconds']:g}s") from e
        except zhipuai.APIStatusError as e:
            raise BackendError("http", f"zhipuai: HTTP {e.status_code}: {_one_line(e)}") from e
        except zhipuai.APIConnectionError as e:
            raise BackendError("connect", f"zhipuai at {self.host}: {_one_line(e)}") from e
        except Exception as e:  # the SDK raises plain errors on odd bodies
            raise BackendError("error", f"zhipuai: {type(e).__name__}: {_one_line(e)}") from e
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

    def ask(self, messages: list[dict], cfg: dict) -> str:
        import httpx
        import ollama

        from ..analyzer.verdict import VERDICT_SCHEMA

        kwargs = dict(model=self.model, messages=messages, format=VERDICT_SCHEMA,
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
            raise BackendError("http", f"ollama: HTTP {e.status_code}: {_one_line(e.error)}") from e
        except ConnectionError as e:
            raise BackendError("connect", f"ollama at {self.host}: not reachable") from e
        except Exception as e:  # e.g. pydantic validation of an odd body
            raise BackendError("error", f"ollama: {type(e).__name__}: {_one_line(e)}") from e
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

    def ask(self, messages: list[dict], cfg: dict) -> str:
        import httpx

        body = {"model": self.model, "messages": messages, "temperature": cfg["temperature"],
                "max_tokens": cfg["max_tokens"], "stream": False}
        try:
            r = self.client.post("chat/completions", json=body, timeout=cfg["timeout_seconds"])
            r.raise_for_status()
            return r.json()["choices"][0]["message"]["content"] or ""
        except httpx.TimeoutException as e:
            raise BackendError("timeout", f"openai: no answer within {cfg['timeout_seconds']:g}s") from e
        except httpx.HTTPStatusError as e:
            raise BackendError("http", f"openai: HTTP {e.response.status_code} from {self.host}") from e
        except httpx.TransportError as e:
            raise BackendError("connect", f"openai at {self.host}: {_one_line(e)}") from e
        except (ValueError, KeyError, IndexError, TypeError) as e:
            raise BackendError("error", f"openai: answer is not a chat completion: {_one_line(e)}") from e

    def close(self) -> None:
        self.client.close()


class HuggingFaceBackend(Backend):
    """A local transformers model. Generation is serialised (one model, one
    forward pass at a time) and stopped at the timeout."""

    name = "huggingface"

    def __init__(self, cfg: dict):
        super().__init__(cfg)
        self.host = None
        device, kwargs = self.preflight(cfg)
        import torch
        import transformers

        try:
            self.tokenizer = transformers.AutoTokenizer.from_pretrained(self.model)
            self.lm = transformers.AutoModelForCausalLM.from_pretrained(self.model, **kwargs)
        except (OSError, ValueError) as e:
            raise BackendError("config", f"huggingface: cannot load {self.model}: {_one_line(e)}") from e
        if "device_map" not in kwargs:
            self.lm.to(device)
        self.lm.eval()
        self.device = device
        self._lock = threading.Lock()
        self._torch = torch
        self._transformers = transformers

    @staticmethod
    def preflight(cfg: dict) -> tuple[str, dict]:
        """The cheap checks, before any model is loaded: packages, GPU,
        quantization. Returns (device, from_pretrained kwargs)."""
        try:
            import torch
            import transformers
        except ImportError as e:
            raise BackendError("config", f"huggingface: {e.name} is not installed") from e
        device = cfg["hf_device"]
        has_cuda = torch.cuda.is_available()
        if device == "cuda" and not has_cuda:
            raise BackendError("config", "huggingface: --hf-device cuda, but torch sees no CUDA GPU")
        if device == "auto":
            device = "cuda" if has_cuda else "cpu"
        kwargs: dict = {}
        if cfg["hf_quantize"] != "none":
            try:
                import bitsandbytes  # noqa: F401
            except ImportError as e:
                raise BackendError("config", f"huggingface: --hf-quantize {cfg['hf_quantize']} needs "
                                   "bitsandbytes (pip install bitsandbytes)") from e
            if not has_cuda:
                raise BackendError("config", f"huggingface: --hf-quantize {cfg['hf_quantize']} needs "
                                   "a CUDA GPU; torch sees none (use --hf-quantize none)")
            bits = 4 if cfg["hf_quantize"] == "4bit" else 8
            kwargs["quantization_config"] = transformers.BitsAndBytesConfig(
                **{f"load_in_{bits}bit": True})
            kwargs["device_map"] = "auto"
        return device, kwargs

    def describe(self) -> str:
        return f"huggingface {self.model} on {self.device}"

    def _inputs(self, messages: list[dict]):
        tok = self.tokenizer
        if getattr(tok, "chat_template", None):
            enc = tok.apply_chat_template(messages, add_generation_prompt=True,
                                          return_tensors="pt", return_dict=True)
        else:
            text = "\n\n".join(f"{m['role'].upper()}:\n{m['content']}" for m in messages)
            enc = tok(text + "\n\nASSISTANT:\n", return_tensors="pt")
        limit = getattr(self.lm.config, "max_position_embeddings", None) or \
            getattr(self.lm.config, "n_positions", None)
        ids = enc["input_ids"]
        if limit and ids.shape[1] >= limit:
            raise BackendError("error", f"huggingface: prompt of {ids.shape[1]} tokens does not fit "
                               f"the model's {limit}-token context")
        return {k: v.to(self.lm.device) for k, v in enc.items()}

    def ask(self, messages: list[dict], cfg: dict) -> str:
        tf = self._transformers
        with self._lock:
            inputs = self._inputs(messages)
            limit = getattr(self.lm.config, "max_position_embeddings", None) or \
                getattr(self.lm.config, "n_positions", None) or 1 << 30
            new = max(1, min(cfg["max_tokens"], limit - inputs["input_ids"].shape[1]))
            sample = cfg["temperature"] > 0
            gen = dict(max_new_tokens=new, do_sample=sample,
                       stopping_criteria=tf.StoppingCriteriaList(
                           [tf.MaxTimeCriteria(cfg["timeout_seconds"])]),
                       pad_token_id=self.tokenizer.pad_token_id or self.tokenizer.eos_token_id or 0)
            if sample:
                gen["temperature"] = cfg["temperature"]
            try:
                with self._torch.no_grad():
                    out = self.lm.generate(**inputs, **gen)
            except (RuntimeError, ValueError, IndexError) as e:
                raise BackendError("error", f"huggingface: generation failed: {_one_line(e)}") from e
        return self.tokenizer.decode(out[0][inputs["input_ids"].shape[1]:], skip_special_tokens=True)


BACKEND_CLASSES = {c.name: c for c in (ZhipuAIBackend, OllamaBackend, OpenAIBackend,
                                       HuggingFaceBackend)}


def choose_auto(cfg: dict, timeout: float = 2.0) -> tuple[str, str]:
    """What "auto" means right now: zhipuai with a key, else ollama when an
    Ollama endpoint is configured (OLLAMA_HOST in the environment or .env,
    or "host" in llm_config.json) and answers with the model, else rules.
    Returns (backend, why).

    Never a server merely found listening: any local user can listen on
    localhost:11434, and whoever answers there would read root's command
    lines and write verdicts."""
    load_env()
    if os.environ.get("ZHIPUAI_API_KEY"):
        return "zhipuai", "ZHIPUAI_API_KEY is set"
    where = ("OLLAMA_HOST" if os.environ.get("OLLAMA_HOST")
             else "host in llm_config.json" if cfg.get("host") else None)
    if where is None:
        return "rules", ("no LLM backend configured (auto uses zhipuai when ZHIPUAI_API_KEY is "
                         "set, ollama when OLLAMA_HOST or a host is configured; it never adopts "
                         "a server it merely finds listening); judging with rules only")
    ok, msg = probe_backend(dict(cfg, backend="ollama"), timeout=timeout)
    if ok:
        return "ollama", f"{where} is configured: {msg}"
    return "rules", f"ollama configured ({where}) but not usable ({msg}); judging with rules only"


class BackendManager:
    """The backend in force for a config, built on first use (in a worker
    thread: loading a local model can take a while) and rebuilt when the
    backend-defining settings change."""

    KEYS = ("backend", "model", "host", "hf_device", "hf_quantize", "timeout_seconds")

    def __init__(self, warn: Callable[[str], None]):
        self.warn = warn
        self._lock = threading.Lock()
        self._sig: tuple | None = None
        self._backend: Backend | None = None
        self._error: BackendError | None = None
        self.status = "not started"

    def get(self, cfg: dict) -> Backend:
        """The backend for cfg (cfg["backend"] already resolved, not auto/rules)."""
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
                        self._backend = cls(cfg)
                    except BackendError:
                        raise
                    except Exception as e:  # e.g. a model that fails to load in torch
                        raise BackendError("config", f"{cfg['backend']}: {type(e).__name__}: "
                                           f"{_one_line(e)}") from e
                    self.status = f"ok: {self._backend.describe()}"
                except BackendError as e:
                    self._error = e
                    self.status = f"error: {e}"
                    self.warn(f"backend {cfg['backend']}: {e}; rule verdicts stand in")
            if self._backend is None:
                raise self._error or BackendError("config", "no backend")
            return self._backend

    def mark(self, ok: bool, message: str = "") -> None:
        """Keep the status line honest after each call."""
        if self._backend is None:
            return
        self.status = f"ok: {self._backend.describe()}" if ok else f"failing: {message}"
