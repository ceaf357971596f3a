"""records/llm_config.json: the analyzer's settings (backend, model, limits,
thresholds, auto-ban), shared by the analyzer (hot reload), the dashboard
(editor, "test backend" button) and people editing the file by hand.

Precedence: DEFAULT_LLM_CONFIG < the analyzer's command-line flags < the
file. A file may hold only some keys; the others keep their lower-layer
values. A file that does not validate is refused with a one-line message and
never rewritten or set aside (someone may be half-way through editing it).

This module is deliberately light (no SDK or torch imports) so the dashboard
can import it cheaply; probe_backend uses plain httpx.
"""

from __future__ import annotations

import copy
import os
import sys
import threading
from typing import Any
from urllib.parse import urlparse

from .. import fsguard
from ..paths import PROJECT_ROOT
from ..store import LLM_CONFIG, CorruptFile, RecordsStore, StoreError, utc_now_iso

BACKENDS = ("auto", "rules", "zhipuai", "ollama", "openai", "huggingface")
LLM_BACKENDS = BACKENDS[2:]  # the ones that actually ask a model
SCOPES = ("unsettled", "all")
HF_DEVICES = ("auto", "cuda", "cpu")
HF_QUANTIZE = ("none", "4bit", "8bit")

# The model used when "model" is null.
DEFAULT_MODELS = {
    "zhipuai": "glm-4-flash",
    "ollama": "qwen3:8b",
    "openai": "default",
    "huggingface": "Qwen/Qwen2.5-0.5B-Instruct",
}
DEFAULT_OLLAMA_HOST = "http://localhost:11434"
DEFAULT_ZHIPUAI_BASE_URL = "https://open.bigmodel.cn/api/paas/v4/"
DEFAULT_OPENAI_BASE_URL = "http://localhost:8000/v1"

DEFAULT_LLM_CONFIG: dict[str, Any] = {
    "version": 1,
    # auto: zhipuai when ZHIPUAI_API_KEY is set, else ollama when it answers,
    # else rules only (said once on stderr).
    "backend": "auto",
    "model": None,            # null: DEFAULT_MODELS[backend]
    "host": None,             # null: OLLAMA_HOST / ZHIPUAI_BASE_URL / OPENAI_BASE_URL / built-in
    "temperature": 0.1,
    "timeout_seconds": 20.0,  # per LLM call; a late answer falls back to the rule verdict
    "max_tokens": 400,
    "llm_scope": "unsettled",  # unsettled: only events the rules did not settle; all: every non-whitelisted one
    "cache_ttl_seconds": 600,  # identical questions (exe, destination, port) answered from cache
    "max_calls_per_minute": 30,
    "queue_size": 256,         # bounded; overflow is dropped, counted and reported
    "workers": 2,              # concurrent LLM calls
    "scan_window_seconds": 60.0,
    "scan_port_threshold": 15,  # distinct ports on one host from one process/source in the window
    "scan_host_threshold": 20,  # distinct hosts from one process/source in the window
    "auto_ban_critical": False,
    "auto_ban_min_confidence": 0.9,
    "auto_ban_ttl_seconds": 3600,
    # Inbound floods (flow events; netsentinel/analyzer/floods.py). A CRITICAL flood is
    # banned at once for flood_ban_ttl_seconds unless auto_block_floods is off;
    # with an LLM in force it is also asked to propose filter rules for review.
    "auto_block_floods": True,
    "flood_ban_ttl_seconds": 600,
    "flood_thresholds": {},    # per-kind overrides, e.g. {"icmp_flood": {"critical": 2000}}
    "propose_rules_on_flood": True,
    "log_max_entries": 2000,   # dashboard_logs.json window
    "known_bad_files": [],     # extra files of IPs/CIDRs, one per line
    "hf_device": "auto",
    "hf_quantize": "none",
}

# Keys that may appear in the file without being settings.
_META_KEYS = ("updated_at", "updated_by")


def _number(key: str, value: Any, lo: float, hi: float, *, integer: bool = False) -> Any:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{key} must be a number, got {value!r}")
    if integer and not float(value).is_integer():
        raise ValueError(f"{key} must be a whole number, got {value!r}")
    if not lo <= value <= hi:
        raise ValueError(f"{key} must be between {lo:g} and {hi:g}, got {value!r}")
    return int(value) if integer else float(value)


def _choice(key: str, value: Any, choices: tuple) -> str:
    if value not in choices:
        raise ValueError(f"{key} must be one of {', '.join(choices)}; got {value!r}")
    return value


def _url(key: str, value: Any) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ValueError(f"{key} must be a URL string or null, got {value!r}")
    u = urlparse(value.strip())
    if u.scheme not in ("http", "https") or not u.netloc:
        raise ValueError(f"{key} must be an http(s) URL like http://localhost:11434, got {value!r}")
    return value.strip()


_CHECKS = {
    "version": lambda k, v: _number(k, v, 1, 1, integer=True),
    "backend": lambda k, v: _choice(k, v, BACKENDS),
    "host": _url,
    "temperature": lambda k, v: _number(k, v, 0, 2),
    "timeout_seconds": lambda k, v: _number(k, v, 0.1, 600),
    "max_tokens": lambda k, v: _number(k, v, 16, 32768, integer=True),
    "llm_scope": lambda k, v: _choice(k, v, SCOPES),
    "cache_ttl_seconds": lambda k, v: _number(k, v, 0, 7 * 86400),
    "max_calls_per_minute": lambda k, v: _number(k, v, 1, 100000, integer=True),
    "queue_size": lambda k, v: _number(k, v, 1, 1000000, integer=True),
    "workers": lambda k, v: _number(k, v, 1, 64, integer=True),
    "scan_window_seconds": lambda k, v: _number(k, v, 1, 86400),
    "scan_port_threshold": lambda k, v: _number(k, v, 2, 65535, integer=True),
    "scan_host_threshold": lambda k, v: _number(k, v, 2, 1000000, integer=True),
    "auto_ban_min_confidence": lambda k, v: _number(k, v, 0, 1),
    "auto_ban_ttl_seconds": lambda k, v: _number(k, v, 1, 10 * 365 * 86400, integer=True),
    "log_max_entries": lambda k, v: _number(k, v, 10, 1000000, integer=True),
    "hf_device": lambda k, v: _choice(k, v, HF_DEVICES),
    "hf_quantize": lambda k, v: _choice(k, v, HF_QUANTIZE),
}


def _check_model(key: str, value: Any) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str) or len(value) > 500:
        raise ValueError(f"{key} must be a model name (string) or null, got {value!r}")
    return value.strip()


def _check_bool(key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{key} must be true or false, got {value!r}")
    return value


def _check_files(key: str, value: Any) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(x, str) and x.strip() for x in value):
        raise ValueError(f"{key} must be a list of file paths")
    return [x.strip() for x in value]


# Flood thresholds (the analyzer's floods.py applies them; they are settings).
# kind: (counter, HIGH pps, CRITICAL pps, minimum share of the window's packets)
DEFAULT_THRESHOLDS: dict[str, dict] = {
    "icmp_flood": {"counter": "icmp_echo", "high": 300, "critical": 800, "min_share": 0.8},
    "syn_flood": {"counter": "tcp_syn", "high": 300, "critical": 800, "min_share": 0.8},
    "ssdp_flood": {"counter": "udp_ssdp", "high": 200, "critical": 800, "min_share": 0.8},
    "reflection": {"counter": "udp_reflect", "high": 200, "critical": 800, "min_share": 0.8},
    "udp_flood": {"counter": "udp", "high": 2000, "critical": 5000, "min_share": 0.9},
}

def merge_thresholds(overrides: dict | None) -> dict:
    """Defaults with per-kind overrides; unknown kinds or fields raise ValueError."""
    merged = {k: dict(v) for k, v in DEFAULT_THRESHOLDS.items()}
    for kind, values in (overrides or {}).items():
        if kind not in merged:
            raise ValueError(f"unknown flood kind {kind!r} (known: {', '.join(merged)})")
        if not isinstance(values, dict):
            raise ValueError(f"flood_thresholds.{kind} must be an object")
        for key, v in values.items():
            if key not in ("high", "critical", "min_share"):
                raise ValueError(f"flood_thresholds.{kind}.{key}: unknown field")
            if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
                raise ValueError(f"flood_thresholds.{kind}.{key} must be a non-negative number")
            merged[kind][key] = v
        if merged[kind]["high"] > merged[kind]["critical"]:
            raise ValueError(f"flood_thresholds.{kind}: high must not exceed critical")
    return merged


def _check_flood_thresholds(key: str, value: Any) -> dict:
    if not isinstance(value, dict):
        raise ValueError(f"{key} must be an object like {{\"icmp_flood\": {{\"critical\": 2000}}}}")
    merge_thresholds(value)  # raises ValueError with the reason
    return value


_CHECKS.update(model=_check_model, auto_ban_critical=_check_bool, known_bad_files=_check_files,
               auto_block_floods=_check_bool, propose_rules_on_flood=_check_bool,
               flood_thresholds=_check_flood_thresholds,
               flood_ban_ttl_seconds=lambda k, v: _number(k, v, 1, 7 * 86400, integer=True))


def validate_llm_config(raw: Any, base: dict | None = None) -> dict:
    """A complete, normalised config: raw's keys over base (default
    DEFAULT_LLM_CONFIG). Raises ValueError with a one-line message."""
    if not isinstance(raw, dict):
        raise ValueError(f"{LLM_CONFIG} must hold a JSON object, got {type(raw).__name__}")
    cfg = copy.deepcopy(base if base is not None else DEFAULT_LLM_CONFIG)
    for key, value in raw.items():
        if key in _META_KEYS or key.startswith("_"):
            cfg[key] = value
            continue
        check = _CHECKS.get(key)
        if check is None:
            raise ValueError(f"unknown setting {key!r} (known: {', '.join(sorted(_CHECKS))})")
        cfg[key] = check(key, value)
    return cfg


def load_llm_config(store: RecordsStore, base: dict | None = None) -> tuple[dict, str | None]:
    """(config in force, None) or (base/defaults, one-line error). A missing
    file is not an error. The file is never modified here."""
    fallback = copy.deepcopy(base if base is not None else DEFAULT_LLM_CONFIG)
    try:
        raw = store.read(LLM_CONFIG, default=None, on_corrupt="raise")
    except CorruptFile as e:
        return fallback, str(e)
    except StoreError as e:
        return fallback, str(e)
    if raw is None:
        return fallback, None
    try:
        return validate_llm_config(raw, base), None
    except ValueError as e:
        return fallback, f"{LLM_CONFIG}: {e}"


def save_llm_config(store: RecordsStore, cfg: dict) -> dict:
    """Validate (raises ValueError) and write the whole config atomically."""
    valid = validate_llm_config(cfg)
    valid["updated_at"] = utc_now_iso()
    store.write(LLM_CONFIG, valid)
    return valid


# ----------------------------------------------------------------- environment
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
            if fsguard.secret_file_ok(env, lambda m: print(f"netsentinel: {m}", file=sys.stderr)):
                load_dotenv(env, override=False)
        _ENV_LOADED = True


def resolve_model(cfg: dict, backend: str | None = None) -> str | None:
    backend = backend or cfg["backend"]
    return cfg.get("model") or DEFAULT_MODELS.get(backend)


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
    if os.path.isdir(os.path.expanduser(model)):
        return True, f"huggingface: local model {model}"
    return True, f"huggingface: model {model} (downloaded or taken from the cache on first use)"
