"""Is a backend usable right now? Cheap checks (no tokens spent) for the
dashboard's "Test connection" button and the analyzer's start-up, and what
backend "auto" means at this moment. The network calls live here, not in
the settings module; httpx is imported only when a probe runs."""

from __future__ import annotations

import os

from .config import resolve_model, validate_llm_config
from .env import load_env, resolve_host


def probe_backend(cfg: dict, timeout: float = 5) -> tuple[bool, str]:
    """Is the configured backend usable right now? A cheap check for a
    dashboard button and the analyzer's start-up: no tokens are spent.
    Returns (ok, one-line message)."""
    try:
        cfg = validate_llm_config(cfg)
    except ValueError as e:
        return False, f"invalid config: {e}"
    load_env()
    backend = cfg["backend"]
    if backend == "rules":
        return True, "rules only: no LLM is asked"
    if backend == "auto":
        for candidate in ("zhipuai", "ollama"):
            ok, msg = probe_backend(dict(cfg, backend=candidate), timeout)
            if ok:
                return True, f"auto -> {msg}"
        return True, "auto -> no LLM backend reachable; rules only"
    model = resolve_model(cfg)
    if backend == "huggingface":
        return _probe_huggingface(model, cfg)
    import httpx  # only here: the dashboard may not need it otherwise

    host = resolve_host(cfg).rstrip("/")
    try:
        if backend == "ollama":
            r = httpx.get(f"{host}/api/tags", timeout=timeout)
            r.raise_for_status()
            names = {m.get("name") or m.get("model") for m in r.json().get("models", [])}
            if model not in names and f"{model}:latest" not in names:
                return False, (f"ollama at {host} is up but has no model {model!r} "
                               f"(try: ollama pull {model}); it has: {', '.join(sorted(n for n in names if n)) or 'none'}")
            return True, f"ollama at {host}, model {model}"
        if backend == "zhipuai":
            if not os.environ.get("ZHIPUAI_API_KEY"):
                return False, "zhipuai: ZHIPUAI_API_KEY is not set (put it in .env)"
            # Any HTTP answer proves the endpoint is reachable; 401 means a bad key.
            r = httpx.get(f"{host}/models", timeout=timeout,
                          headers={"Authorization": f"Bearer {os.environ['ZHIPUAI_API_KEY']}"})
            if r.status_code in (401, 403):
                return False, f"zhipuai at {host} refused the API key (HTTP {r.status_code})"
            return True, f"zhipuai at {host}, model {model} (HTTP {r.status_code})"
        if backend == "openai":
            headers = {}
            if os.environ.get("OPENAI_API_KEY"):
                headers["Authorization"] = f"Bearer {os.environ['OPENAI_API_KEY']}"
            r = httpx.get(f"{host}/models", timeout=timeout, headers=headers)
            if r.status_code in (401, 403):
                return False, f"{host} refused the API key (HTTP {r.status_code}; set OPENAI_API_KEY)"
            return True, f"OpenAI-compatible endpoint {host}, model {model} (HTTP {r.status_code})"
    except httpx.HTTPError as e:
        return False, f"{backend} at {host} is not reachable: {type(e).__name__}: {e}".strip()
    except ValueError as e:  # a non-JSON answer from something that is not ollama
        return False, f"{backend} at {host} answered something unexpected: {e}"
    return False, f"unknown backend {backend!r}"


def _probe_huggingface(model: str, cfg: dict) -> tuple[bool, str]:
    import importlib.util

    for mod in ("transformers", "torch"):
        if importlib.util.find_spec(mod) is None:
            return False, f"huggingface: the {mod} package is not installed"
    if cfg["hf_quantize"] != "none" and importlib.util.find_spec("bitsandbytes") is None:
        return False, (f"huggingface: --hf-quantize {cfg['hf_quantize']} needs bitsandbytes "
                       "(pip install bitsandbytes) and a CUDA GPU")
    from .base import BackendError
    from .hf import locate

    try:
        source, extra = locate(model, cfg.get("hf_gguf_file"))
    except BackendError as e:
        return False, str(e)
    if os.path.isdir(source):
        what = f"GGUF file {extra['gguf_file']} in {source}" if extra else f"model directory {source}"
        return True, f"huggingface: {what}"
    return True, f"huggingface: model {model}, if it is in the local Hugging Face cache " \
        "(nothing is downloaded at run time)"


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
