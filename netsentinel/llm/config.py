"""records/llm_config.json: the analyzer's settings (backend, model, limits,
thresholds, auto-ban), shared by the analyzer (hot reload), the dashboard
(editor) and people editing the file by hand.

FIELDS is the one table of them: name, type, default, range or choices, the
analyzer's flag and its help. It drives validation here, llm_analyzer.py's
flags (analyzer/cli.py), the dashboard's widgets and bounds (dashboard/llm.py)
and the settings table in docs/ANALYZER.md (tests/test_llm_config.py checks
the docs against it).

Precedence: DEFAULT_LLM_CONFIG < the analyzer's command-line flags < the
file. A file may hold only some keys; the others keep their lower-layer
values. A file that does not validate is refused with a one-line message and
never rewritten or set aside (someone may be half-way through editing it).

This module is deliberately light (no SDK, torch or network): the dashboard
imports it. .env loading is in env.py, backend probes in probe.py.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Callable
from urllib.parse import urlparse

from ..errors import ConfigError
from ..records import LLM_CONFIG
from ..store import CorruptFile, RecordsStore, StoreError
from ..timefmt import utc_now_iso

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

# Keys that may appear in the file without being settings.
_META_KEYS = ("updated_at", "updated_by")
# Settings only root changes (the unprivileged dashboard shows them locked;
# the analyzer refuses a change from anyone else, analyzer/dashcmds.py):
# which backend and model run, where the API key is sent, which files root
# reads or loads.
ROOT_ONLY_SETTINGS = ("backend", "host", "model", "known_bad_files", "hf_gguf_file", "hf_device",
                      "hf_quantize")

DAY = 86400


@dataclass(frozen=True)
class Field:
    """One setting. kind: int, float, bool, choice, url, model, files or
    thresholds. flags: the analyzer's command-line flags (none: the file and
    the dashboard only); group: its --help section. label: the dashboard's
    widget label (None: not on the form)."""
    name: str
    kind: str
    default: Any
    help: str
    lo: float | None = None
    hi: float | None = None
    choices: tuple = ()
    flags: tuple = ()
    metavar: str | None = None
    group: str = "LLM"
    label: str | None = None

    def check(self, value: Any) -> Any:
        """The normalised value; ConfigError (a ValueError) with a one-line reason."""
        return _CHECKERS[self.kind](self, value)

    def cli_kwargs(self) -> dict:
        """argparse.add_argument keywords (no default: an absent flag leaves
        the setting to the file or the default)."""
        kw: dict[str, Any] = {"dest": self.name}
        if self.kind in ("int", "float"):
            kw["type"] = int if self.kind == "int" else float
        elif self.kind == "choice":
            kw["choices"] = self.choices
        elif self.kind == "bool":
            kw.update(action="store_const", const=True)
        elif self.kind == "files":
            kw.update(action="append", metavar=self.metavar or "FILE")
        if self.metavar and self.kind != "files":
            kw["metavar"] = self.metavar
        notes = [] if self.default in (None, [], False) else [f"default {_text(self.default)}"]
        if self.kind in ("int", "float"):
            notes.append(self.range_text())
        kw["help"] = (self.help + (f" ({'; '.join(notes)})" if notes else "")).replace("%", "%%")
        return kw

    def range_text(self) -> str:
        if self.kind in ("int", "float"):
            return _num(self.lo) if self.lo == self.hi else f"{_num(self.lo)}–{_num(self.hi)}"
        return {"choice": ", ".join(f"`{c}`" for c in self.choices), "bool": "`true`, `false`",
                "url": "http(s) URL or `null`", "model": "name or `null`",
                "files": "list of paths", "thresholds": "per-kind overrides"}[self.kind]


def _num(x: float) -> str:
    """A bound as people write it: 1000000, not 1e+06."""
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def _text(value: Any) -> str:
    return "null" if value is None else str(value).lower() if isinstance(value, bool) else str(value)


def _number(f: Field, value: Any) -> Any:
    key, integer = f.name, f.kind == "int"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{key} must be a number, got {value!r}")
    if integer and not float(value).is_integer():
        raise ConfigError(f"{key} must be a whole number, got {value!r}")
    if not f.lo <= value <= f.hi:
        raise ConfigError(f"{key} must be between {_num(f.lo)} and {_num(f.hi)}, got {value!r}")
    return int(value) if integer else float(value)


def _choice(f: Field, value: Any) -> str:
    if value not in f.choices:
        raise ConfigError(f"{f.name} must be one of {', '.join(f.choices)}; got {value!r}")
    return value


def _url(f: Field, value: Any) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ConfigError(f"{f.name} must be a URL string or null, got {value!r}")
    u = urlparse(value.strip())
    if u.scheme not in ("http", "https") or not u.netloc:
        raise ConfigError(f"{f.name} must be an http(s) URL like http://localhost:11434, got {value!r}")
    return value.strip()


def _model(f: Field, value: Any) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str) or len(value) > 500:
        raise ConfigError(f"{f.name} must be a model name (string) or null, got {value!r}")
    return value.strip()


def _bool(f: Field, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{f.name} must be true or false, got {value!r}")
    return value


def _files(f: Field, value: Any) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(x, str) and x.strip() for x in value):
        raise ConfigError(f"{f.name} must be a list of file paths")
    return [x.strip() for x in value]


# Flood thresholds (the analyzer's floods.py applies them; they are settings).
# kind: (counter, HIGH pps, CRITICAL pps, minimum share of the window's packets)
DEFAULT_THRESHOLDS: dict[str, dict] = {
    "icmp_flood": {"counter": "icmp_echo", "high": 300, "critical": 800, "min_share": 0.8},
    "syn_flood": {"counter": "tcp_syn", "high": 300, "critical": 800, "min_share": 0.8},
    "ssdp_flood": {"counter": "udp_ssdp", "high": 200, "critical": 800, "min_share": 0.8},
    "reflection": {"counter": "udp_reflect", "high": 200, "critical": 800, "min_share": 0.8},
    "udp_flood": {"counter": "udp", "high": 1500, "critical": 3000, "min_share": 0.9},
}


def merge_thresholds(overrides: dict | None) -> dict:
    """Defaults with per-kind overrides; unknown kinds or fields raise ConfigError."""
    merged = {k: dict(v) for k, v in DEFAULT_THRESHOLDS.items()}
    for kind, values in (overrides or {}).items():
        if kind not in merged:
            raise ConfigError(f"unknown flood kind {kind!r} (known: {', '.join(merged)})")
        if not isinstance(values, dict):
            raise ConfigError(f"flood_thresholds.{kind} must be an object")
        for key, v in values.items():
            if key not in ("high", "critical", "min_share"):
                raise ConfigError(f"flood_thresholds.{kind}.{key}: unknown field")
            if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
                raise ConfigError(f"flood_thresholds.{kind}.{key} must be a non-negative number")
            merged[kind][key] = v
        if merged[kind]["high"] > merged[kind]["critical"]:
            raise ConfigError(f"flood_thresholds.{kind}: high must not exceed critical")
    return merged


def _thresholds(f: Field, value: Any) -> dict:
    if not isinstance(value, dict):
        raise ConfigError(f"{f.name} must be an object like {{\"icmp_flood\": {{\"critical\": 2000}}}}")
    merge_thresholds(value)  # raises ValueError with the reason
    return value


_CHECKERS: dict[str, Callable[[Field, Any], Any]] = {
    "int": _number, "float": _number, "bool": _bool, "choice": _choice, "url": _url,
    "model": _model, "files": _files, "thresholds": _thresholds}

_SCAN, _BAN, _REC = "rules", "auto-ban (off by default)", "records"
# Monitoring agents, browsers, mail and DNS servers talk to many ports and hosts by design.
SCAN_ALLOWED_EXES = ("/usr/bin/prometheus", "/usr/local/bin/prometheus", "/usr/bin/vmagent",
                     "/usr/bin/telegraf", "/usr/sbin/zabbix_server", "/usr/sbin/zabbix_proxy",
                     "/usr/lib/firefox-esr/firefox-esr", "/usr/lib/firefox/firefox",
                     "/usr/lib/chromium/chromium", "/opt/google/chrome/chrome",
                     "/usr/lib/postfix/sbin/smtp", "/usr/sbin/unbound", "/usr/sbin/named")
FIELDS: tuple[Field, ...] = (
    Field("version", "int", 1, "format version of the file", 1, 1),
    Field("backend", "choice", "auto", "auto: zhipuai when ZHIPUAI_API_KEY is set, else ollama "
          "when OLLAMA_HOST or a host is configured and answers, else rules only (never a server "
          "merely found listening)", choices=BACKENDS, flags=("--backend",), label="Backend"),
    Field("model", "model", None, "null: the backend's default model (zhipuai glm-4-flash, "
          "ollama qwen3:8b); --hf-model sets it too", flags=("--model",), label="Model"),
    Field("host", "url", None, "endpoint URL: OpenAI-compatible base (…/v1), Ollama host or "
          "zhipuai base; null: OPENAI_BASE_URL / OLLAMA_HOST / ZHIPUAI_BASE_URL or the default",
          flags=("--base-url", "--host"), label="Host / base URL"),
    Field("temperature", "float", 0.1, "sampling temperature", 0, 2, flags=("--temperature",),
          label="Temperature"),
    Field("timeout_seconds", "float", 20.0, "per LLM call; a late answer falls back to the rules",
          0.1, 600, flags=("--timeout",), metavar="SECONDS", label="Timeout per call (s)"),
    Field("max_tokens", "int", 256, "answer length cap (a verdict is about 60-120 tokens)",
          16, 32768),
    Field("llm_scope", "choice", "unsettled", "unsettled: ask about events the rules did not "
          "settle, and settled ones with behaviour signals; all: every non-whitelisted event", choices=SCOPES, flags=("--llm-scope",),
          label="Ask the LLM about"),
    Field("cache_ttl_seconds", "float", 600, "identical questions (everything the model is shown "
          "but pid and times) are answered from cache this long", 0, 7 * DAY, flags=("--cache-ttl",), metavar="SECONDS"),
    Field("max_calls_per_minute", "int", 30, "rate cap on LLM calls", 1, 100000,
          flags=("--max-calls-per-minute",), label="Max LLM calls / min"),
    Field("queue_size", "int", 256, "bounded LLM queue; overflow is dropped and counted", 1, 1000000,
          flags=("--queue-size",)),
    Field("workers", "int", 2, "concurrent LLM calls", 1, 64, flags=("--workers",)),
    Field("scan_window_seconds", "float", 60.0, "sliding window of the scan rules", 1, DAY,
          flags=("--scan-window",), metavar="SECONDS", group=_SCAN, label="Scan window (s)"),
    Field("scan_port_threshold", "int", 15, "distinct ports on one host that make a port scan",
          2, 65535, flags=("--scan-ports",), metavar="N", group=_SCAN,
          label="Port-scan threshold (ports)"),
    Field("scan_host_threshold", "int", 20, "distinct hosts that make a host sweep", 2, 1000000,
          flags=("--scan-hosts",), metavar="N", group=_SCAN, label="Host-sweep threshold (hosts)"),
    Field("scan_long_window_seconds", "float", 3600.0, "long window of the scan rules: a slow "
          "scan crosses its thresholds here", 60, 7 * DAY, flags=("--scan-long-window",),
          metavar="SECONDS", group=_SCAN),
    Field("scan_long_port_threshold", "int", 100, "distinct ports on one host within the long "
          "window that make a port scan", 2, 1024, flags=("--scan-long-ports",), metavar="N",
          group=_SCAN),
    Field("scan_long_host_threshold", "int", 100, "distinct hosts within the long window that "
          "make a host sweep", 2, 1024, flags=("--scan-long-hosts",), metavar="N", group=_SCAN),
    Field("scan_allowed_exes", "files", list(SCAN_ALLOWED_EXES), "executables (exact paths, "
          "root-owned) never judged by the scan rules: monitoring agents, browsers (the flag is "
          "repeatable)", flags=("--scan-allow",), metavar="EXE", group=_SCAN),
    Field("auto_ban_critical", "bool", False, "ban without waiting for a person when the rules "
          "(a match or a measurement) said CRITICAL above the confidence threshold; a level raised "
          "by the model never bans by itself", flags=("--auto-ban-critical",), group=_BAN,
          label="Auto-ban CRITICAL threats"),
    Field("auto_ban_min_confidence", "float", 0.9, "confidence an auto-ban needs", 0, 1,
          flags=("--auto-ban-min-confidence",), group=_BAN, label="Minimum confidence"),
    Field("auto_ban_ttl_seconds", "int", 3600, "auto-bans expire after this", 1, 10 * 365 * DAY,
          flags=("--auto-ban-ttl",), metavar="SECONDS", group=_BAN,
          label="Auto-ban expires after (s)"),
    Field("auto_block_floods", "bool", True, "ban a CRITICAL inbound flood at once; rate-limit "
          "the port of a CRITICAL aggregate (many-source) flood (netsentinel/analyzer/floods.py)"),
    Field("flood_ban_ttl_seconds", "int", 600, "flood bans expire after this", 1, 7 * DAY),
    Field("flood_thresholds", "thresholds", {}, "per-kind overrides of the flood thresholds, "
          'e.g. {"icmp_flood": {"critical": 2000}}'),
    Field("propose_rules_on_flood", "bool", True, "with an LLM in force, ask it for filter rules "
          "against a CRITICAL flood, for review"),
    Field("log_max_entries", "int", 500, "dashboard_logs.json: the latest verdicts for people and "
          "scripts (the dashboard reads the event store)", 10, 1000000,
          flags=("--log-max-entries",), group=_REC),
    Field("known_bad_files", "files", [], "extra known-bad lists of IPs/CIDRs, one per line "
          "(the flag is repeatable)", flags=("--known-bad",), group=_SCAN),
    Field("hf_device", "choice", "auto", "huggingface: where the model runs", choices=HF_DEVICES,
          flags=("--hf-device",)),
    Field("hf_quantize", "choice", "none", "huggingface: 4bit/8bit need bitsandbytes and a GPU",
          choices=HF_QUANTIZE, flags=("--hf-quantize",)),
    Field("hf_gguf_file", "model", None, "huggingface: the .gguf file to load inside the "
          "--hf-model directory (a --hf-model ending in .gguf needs none)",
          flags=("--hf-gguf-file",), metavar="FILE"),
)
FIELD = {f.name: f for f in FIELDS}
DEFAULT_LLM_CONFIG: dict[str, Any] = {f.name: copy.deepcopy(f.default) for f in FIELDS}


def validate_llm_config(raw: Any, base: dict | None = None) -> dict:
    """A complete, normalised config: raw's keys over base (default
    DEFAULT_LLM_CONFIG). Raises ConfigError (a ValueError) with a one-line message."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{LLM_CONFIG} must hold a JSON object, got {type(raw).__name__}")
    cfg = copy.deepcopy(base if base is not None else DEFAULT_LLM_CONFIG)
    for key, value in raw.items():
        if key in _META_KEYS or key.startswith("_"):
            cfg[key] = value
            continue
        field = FIELD.get(key)
        if field is None:
            raise ConfigError(f"unknown setting {key!r} (known: {', '.join(sorted(FIELD))})")
        cfg[key] = field.check(value)
    return cfg


def resolve_model(cfg: dict, backend: str | None = None) -> str | None:
    backend = backend or cfg["backend"]
    return cfg.get("model") or DEFAULT_MODELS.get(backend)


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
