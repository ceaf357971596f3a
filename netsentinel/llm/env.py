"""The environment of the LLM backends: .env loading and the endpoint a
backend talks to when llm_config.json names none. API keys live here (in
.env or the environment), never in records/."""

from __future__ import annotations

import os
import sys
import threading

from .. import fsguard
from ..paths import PROJECT_ROOT

DEFAULT_OLLAMA_HOST = "http://localhost:11434"
DEFAULT_ZHIPUAI_BASE_URL = "https://open.bigmodel.cn/api/paas/v4/"
DEFAULT_OPENAI_BASE_URL = "http://localhost:8000/v1"

_ENV_LOADED = False
_ENV_LOCK = threading.Lock()


def load_env() -> None:
    """Read .env (checkout root, then the working directory) into os.environ
    once, never overriding variables already set. Thread-safe: a caller
    returns only once the variables are in place."""
    global _ENV_LOADED
    with _ENV_LOCK:
        if _ENV_LOADED:
            return
        try:
            from dotenv import load_dotenv
        except ImportError:  # the analyzer still runs on rules without it
            _ENV_LOADED = True
            return
        for env in (PROJECT_ROOT / ".env", os.path.join(os.getcwd(), ".env")):
            # Not one others can write (they would pick our endpoints and
            # keys), nor another user's when we are root; warns if readable.
            if fsguard.secret_file_ok(env, lambda m: print(f"netsentinel: {m}", file=sys.stderr)):
                load_dotenv(env, override=False)
        _ENV_LOADED = True


def resolve_host(cfg: dict, backend: str | None = None) -> str | None:
    """The URL a backend talks to: the config's host, else its environment
    variable, else the built-in default."""
    backend = backend or cfg["backend"]
    load_env()
    if cfg.get("host"):
        return cfg["host"]
    if backend == "ollama":
        host = os.environ.get("OLLAMA_HOST") or DEFAULT_OLLAMA_HOST
        # The ollama CLI accepts a bare host:port in OLLAMA_HOST.
        return host if "://" in host else f"http://{host}"
    if backend == "zhipuai":
        return os.environ.get("ZHIPUAI_BASE_URL") or DEFAULT_ZHIPUAI_BASE_URL
    if backend == "openai":
        return os.environ.get("OPENAI_BASE_URL") or DEFAULT_OPENAI_BASE_URL
    return None
