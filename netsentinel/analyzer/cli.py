"""Command line of llm_analyzer.py: the analyzer itself (no subcommand) and
`threats list|approve|reject` for people without the dashboard."""

from __future__ import annotations

import argparse
import json
import signal
import sys

from .. import paths, threats
from ..bancheck import BanRefused
from ..llm.config import (BACKENDS, DEFAULT_LLM_CONFIG, HF_DEVICES, HF_QUANTIZE, SCOPES,
                          load_env, validate_llm_config)
from ..netinfo import protected_addresses
from ..store import (ANALYZER_STATUS, DASHBOARD_LOGS, LLM_CONFIG, PENDING_THREATS, RecordsStore,
                     StoreError)
from ..whitelist import ConfigError, WhitelistFile
from ..llm.backends import BackendError, HuggingFaceBackend
from .rules import DEFAULT_RULES_PATH, RuleEngine, RuleFileError
from .settings import SettingsWatcher
from .sinks import HISTORY

PROG = "llm_analyzer.py"

DESCRIPTION = """Reads the loader's JSON-lines events on stdin, classifies every connection
(rules first, then an LLM for what the rules do not settle) and writes
records/: pending_threats.json (HIGH/CRITICAL, for a person to approve or
reject), dashboard_logs.json (recent verdicts), analyzer_status.json."""

EPILOG = f"""examples:
  sudo sh -c ".venv/bin/python -u unified_ebpf.py -i eth0 | .venv/bin/python -u {PROG} --backend ollama"
  ... | {PROG}                              # auto: zhipuai if ZHIPUAI_API_KEY, else ollama if up, else rules
  ... | {PROG} --backend rules              # no LLM at all
  ... | {PROG} --backend zhipuai --model glm-4-flash      # key: ZHIPUAI_API_KEY in .env
  ... | {PROG} --backend ollama --model qwen3:8b          # host: OLLAMA_HOST
  ... | {PROG} --backend openai --base-url http://127.0.0.1:8000/v1 --model Qwen/Qwen2.5-7B-Instruct
  ... | {PROG} --backend huggingface --hf-model ./my-model --hf-device cpu
  ... | {PROG} --records /tmp/rec --clear   # separate records dir, emptied first
  {PROG} < saved_events.jsonl --backend rules            # replay a capture

pending threats from a terminal:
  {PROG} threats list                       # pending ones (--all: decided too; --json)
  {PROG} threats approve 3f9c2a1b7d4e --ttl 3600          # writes a ban command
  {PROG} threats reject 3f9c2a1b7d4e --whitelist --note "our backup server"

settings: command-line flags are the starting values; records/{LLM_CONFIG}, when
present and valid, overrides them key by key and is re-read on every change
(a bad file is refused with a message; the previous settings stay).
Exit status: 0 after EOF on stdin, 2 for a usage or configuration error.
docs/ANALYZER.md has the rules format and output contracts."""


def _flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("LLM")
    g.add_argument("--backend", choices=BACKENDS, help="default: auto")
    g.add_argument("--model", help="model name (defaults: zhipuai glm-4-flash, ollama qwen3:8b)")
    g.add_argument("--base-url", "--host", dest="host",
                   help="endpoint URL: OpenAI-compatible base (…/v1), Ollama host or zhipuai base; "
                        "default from OPENAI_BASE_URL / OLLAMA_HOST / ZHIPUAI_BASE_URL")
    g.add_argument("--temperature", type=float)
    g.add_argument("--timeout", dest="timeout_seconds", type=float, metavar="SECONDS",
                   help="per LLM call (default 20); a late answer falls back to the rules")
    g.add_argument("--llm-scope", choices=SCOPES,
                   help="unsettled (default): ask only about events the rules did not settle; "
                        "all: every non-whitelisted event")
    g.add_argument("--cache-ttl", dest="cache_ttl_seconds", type=float, metavar="SECONDS")
    g.add_argument("--max-calls-per-minute", type=int)
    g.add_argument("--queue-size", type=int, help="bounded LLM queue (overflow counted)")
    g.add_argument("--workers", type=int, help="concurrent LLM calls")
    g.add_argument("--hf-model", help="huggingface: model name or local path (sets --model)")
    g.add_argument("--hf-device", choices=HF_DEVICES)
    g.add_argument("--hf-quantize", choices=HF_QUANTIZE, help="4bit/8bit need bitsandbytes and a GPU")
    r = p.add_argument_group("rules")
    r.add_argument("--rules", help=f"rules file (default {DEFAULT_RULES_PATH.relative_to(paths.PROJECT_ROOT)})")
    r.add_argument("--known-bad", action="append", default=[], metavar="FILE",
                   help="extra known-bad list of IPs/CIDRs (repeatable)")
    r.add_argument("--scan-window", dest="scan_window_seconds", type=float, metavar="SECONDS")
    r.add_argument("--scan-ports", dest="scan_port_threshold", type=int, metavar="N",
                   help="distinct ports on one host that make a port scan (default 15)")
    r.add_argument("--scan-hosts", dest="scan_host_threshold", type=int, metavar="N",
                   help="distinct hosts that make a host sweep (default 20)")
    a = p.add_argument_group("auto-ban (off by default)")
    a.add_argument("--auto-ban-critical", action="store_const", const=True,
                   help="ban CRITICAL verdicts above the confidence threshold without waiting")
    a.add_argument("--auto-ban-min-confidence", type=float)
    a.add_argument("--auto-ban-ttl", dest="auto_ban_ttl_seconds", type=int, metavar="SECONDS")
    o = p.add_argument_group("records")
    o.add_argument("--clear", action="store_true",
                   help="empty the analyzer's data files on start (threats, logs, history, status)")
    o.add_argument("--no-history", action="store_true",
                   help=f"do not keep the full history in records/{HISTORY}")
    o.add_argument("--log-max-entries", type=int, help="dashboard_logs.json window (default 2000)")
    o.add_argument("--drain-timeout", type=float, default=10.0, metavar="SECONDS",
                   help="at EOF, wait at most this long for queued LLM answers (default 10)")
    o.add_argument("--status-interval", type=float, default=2.0, metavar="SECONDS")


def _common(p: argparse.ArgumentParser, default) -> None:
    p.add_argument("--records", default=default,
                   help="records directory (default: records/ beside the scripts, or $NETSENTINEL_RECORDS)")
    p.add_argument("--config", default=default,
                   help="whitelist file (default: filter_config.json, or $NETSENTINEL_CONFIG)")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=DESCRIPTION, epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    _common(p, None)
    _flags(p)
    sub = p.add_subparsers(dest="command", metavar="{threats}")
    t = sub.add_parser("threats", help="list, approve or reject pending threats",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog="examples:\n" + EPILOG.split("pending threats from a terminal:\n", 1)[1]
                       .split("\n\n")[0])
    # SUPPRESS: a value given before the subcommand is not overwritten by a default here.
    _common(t, argparse.SUPPRESS)
    tsub = t.add_subparsers(dest="action", required=True)
    ls = tsub.add_parser("list", help="show threats (pending by default)")
    ls.add_argument("--all", action="store_true", help="decided threats too")
    ls.add_argument("--json", action="store_true", help="print JSON")
    ap = tsub.add_parser("approve", help="approve: write a ban command for the threat's target")
    ap.add_argument("id")
    ap.add_argument("--ttl", type=int, metavar="SECONDS", help="ban expiry")
    ap.add_argument("--note")
    rj = tsub.add_parser("reject", help="reject: record the decision")
    rj.add_argument("id")
    rj.add_argument("--whitelist", action="store_true", help="also whitelist the destination")
    rj.add_argument("--note")
    return p


def _warn(msg: str) -> None:
    print(f"{PROG}: {msg}", file=sys.stderr, flush=True)


def _base_config(args) -> dict:
    """Defaults overlaid with the flags actually given."""
    raw = {k: getattr(args, k) for k in DEFAULT_LLM_CONFIG if getattr(args, k, None) is not None}
    if args.hf_model:
        raw["model"] = args.hf_model
    if args.known_bad:
        raw["known_bad_files"] = list(args.known_bad)
    return validate_llm_config(raw)


def clear_records(store: RecordsStore, max_entries: int) -> list[str]:
    cleared = []
    store.write(PENDING_THREATS, [])
    store.write(DASHBOARD_LOGS, {"updated_at": None, "max_entries": max_entries, "entries": []})
    cleared += [PENDING_THREATS, DASHBOARD_LOGS]
    for name in [ANALYZER_STATUS, HISTORY] + [f"{HISTORY}.{i}" for i in range(1, 10)]:
        if store.remove(name):
            cleared.append(name)
    return cleared


def run_analyzer(args) -> int:
    load_env()
    try:
        base = _base_config(args)
    except ValueError as e:
        _warn(f"error: {e}")
        return 2
    store = RecordsStore(paths.records_dir(args.records), warn=_warn)
    if base["backend"] == "huggingface":
        try:
            HuggingFaceBackend.preflight(base)
        except BackendError as e:
            _warn(f"error: {e}")
            return 2
    try:
        engine = RuleEngine(args.rules or DEFAULT_RULES_PATH, extra_lists=base["known_bad_files"],
                            warn=_warn)
    except RuleFileError as e:
        _warn(f"error: {e}")
        return 2
    if args.clear:
        cleared = clear_records(store, base["log_max_entries"])
        _warn(f"--clear: emptied {', '.join(cleared)} in {store.root}")
    settings = SettingsWatcher(store, base, _warn)
    cfg = settings.current()
    if settings.error:
        _warn("starting with the command-line settings")
    elif settings.from_file:
        _warn(f"{store.path(LLM_CONFIG)} is in force over command-line flags "
              f"(backend {cfg['backend']})")
    from .guard import EXIT_RECORDING_FAILED
    from .pipeline import Analyzer  # after the cheap checks: fail fast
    from .status import summary_line

    analyzer = Analyzer(store, settings, engine, WhitelistFile(paths.config_path(args.config),
                                                               warn=_warn),
                        warn=_warn, history=not args.no_history,
                        status_interval=args.status_interval)
    analyzer.start()
    st = analyzer.status()
    _warn(f"reading events on stdin; backend {st['backend']} (setting: {st['backend_setting']}); "
          f"records in {store.root}")
    if sys.stdin.isatty():
        _warn("stdin is a terminal: pipe the loader's events in (see --help); Ctrl-D ends")
    drain = args.drain_timeout

    def stop(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    try:
        analyzer.run(sys.stdin.buffer)
    except KeyboardInterrupt:
        drain = min(drain, 2.0)
        _warn("interrupted; finishing")
    # finish() is bounded by the drain time; a signal now must not cut it short
    # and lose the last batch of records.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    status = analyzer.finish(drain)
    _warn(summary_line(status))
    if analyzer.flusher.fatal:
        _warn(f"error: {analyzer.flusher.fatal}")
        return EXIT_RECORDING_FAILED
    return 0


def _print_threats(items: list[dict]) -> None:
    if not items:
        print("no threats")
        return
    print(f"{'ID':<12}  {'STATUS':<8}  {'LEVEL':<8}  {'COUNT':>5}  {'TARGET':<18}  {'CATEGORY':<20}  REASON")
    for t in items:
        ev = t.get("event") or {}
        reason = " ".join(str(t.get("reason", "")).split())
        print(f"{t.get('id', '?'):<12}  {t.get('status', '?'):<8}  {t.get('level', '?'):<8}  "
              f"{t.get('count', 1):>5}  {str(t.get('target') or ev.get('daddr')):<18}  "
              f"{str(t.get('category'))[:20]:<20}  {reason[:100]}")


def run_threats(args) -> int:
    store = RecordsStore(paths.records_dir(getattr(args, "records", None)), warn=_warn)
    wl_file = WhitelistFile(paths.config_path(getattr(args, "config", None)), warn=_warn)
    try:
        if args.action == "list":
            items = threats.list_threats(store, None if args.all else "pending")
            if args.json:
                print(json.dumps(items, indent=2, ensure_ascii=False))
            else:
                _print_threats(items)
            return 0
        if args.action == "approve":
            wl = wl_file.load()
            t = threats.approve(store, args.id, by="cli", note=args.note, ttl_seconds=args.ttl,
                                whitelist=wl, protected=protected_addresses(wl.config["protect_ssh_ports"]))
            print(f"approved {t['id']}: ban command queued: {json.dumps(t['ban_command'])}")
            return 0
        t = threats.reject(store, args.id, by="cli", note=args.note,
                           whitelist_file=wl_file if args.whitelist else None)
        extra = f"; whitelisted {t['whitelisted']}" if t.get("whitelisted") else ""
        print(f"rejected {t['id']}{extra}")
        return 0
    except BanRefused as e:
        _warn(f"error: ban refused: {e}; threat stays pending (reject it, or ban by hand)")
    except (threats.ThreatError, ConfigError, StoreError) as e:
        _warn(f"error: {e}")
    return 1


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "threats":
            return run_threats(args)
        return run_analyzer(args)
    except StoreError as e:  # e.g. a records directory that cannot be created
        _warn(f"error: {e}")
        return 2
