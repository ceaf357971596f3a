"""Command line of llm_analyzer.py: the analyzer itself (no subcommand) and
`threats list|approve|reject` for people without the dashboard."""

from __future__ import annotations

import argparse
import json
import signal
import sys

from .. import metrics, paths, threats
from ..cliargs import EXIT_FAILURE, EXIT_USAGE, quiet_on_closed_stdout, tool_parser
from ..bancheck import BanRefused
from ..llm.config import DEFAULT_LLM_CONFIG, FIELDS, validate_llm_config
from ..llm.env import load_env
from ..errors import DecisionError
from ..netinfo import ProtectedCache
from ..eventstore import DSN_ENV, Retention, resolve_dsn
from ..eventstore.base import DEFAULT_MAX_AGE_DAYS, DEFAULT_MAX_BYTES
from ..eventstore.process import StoreProcess
from ..records import (ANALYZER_STATUS, DASHBOARD_LOGS, EVENTS_DB, HISTORY, LLM_CONFIG,
                       PENDING_THREATS, history_files)
from ..store import RecordsStore, StoreError
from ..whitelist import ConfigError, WhitelistFile
from ..llm.backends import BackendError, HuggingFaceBackend
from .rules import DEFAULT_RULES_PATH, RuleEngine, RuleFileError
from .settings import SettingsWatcher

PROG = "llm_analyzer.py"

DESCRIPTION = """Reads the loader's JSON-lines events on stdin, classifies every connection
(rules first, then an LLM for what the rules do not settle) and writes
records/: pending_threats.json (HIGH/CRITICAL, for a person to approve or
reject), dashboard_logs.json (recent verdicts), analyzer_status.json, and
every verdict into the event store (records/events.sqlite3 or --store-dsn;
search it with `netsentinel events`)."""

EPILOG = f"""examples:
  sudo sh -c ".venv/bin/python -u unified_ebpf.py -i eth0 | .venv/bin/python -u {PROG} --backend ollama"
  ... | {PROG}                              # auto: zhipuai if ZHIPUAI_API_KEY, else ollama if up, else rules
  ... | {PROG} --backend rules              # no LLM at all
  ... | {PROG} --backend zhipuai --model glm-4-flash      # key: ZHIPUAI_API_KEY in .env
  ... | {PROG} --backend ollama --model qwen3:8b          # host: OLLAMA_HOST
  ... | {PROG} --backend openai --base-url http://127.0.0.1:8000/v1 --model Qwen/Qwen2.5-7B-Instruct
  ... | {PROG} --backend huggingface --hf-model ./my-model --hf-device cpu
  ... | {PROG} --backend huggingface --hf-model ./SmolLM2-135M-Instruct.Q4_1.gguf
  ... | {PROG} --records /tmp/rec --clear   # separate records dir, emptied first
  {PROG} < saved_events.jsonl --backend rules            # replay a capture

pending threats from a terminal:
  {PROG} threats list                       # pending ones (--all: decided too; --json)
  {PROG} threats approve 3f9c2a1b7d4e --ttl 3600          # writes a ban command
  {PROG} threats reject 3f9c2a1b7d4e --whitelist --note "our backup server"

settings: command-line flags are the starting values; records/{LLM_CONFIG}, when
present and valid, overrides them key by key and is re-read on every change
(a bad file is refused with a message; the previous settings stay).
docs/ANALYZER.md has the rules format and output contracts."""


def _flags(p: argparse.ArgumentParser) -> None:
    # Every settings flag comes from the one field table (llm/config.FIELDS);
    # the others only steer this run.
    groups = {name: p.add_argument_group(name) for name in ("LLM", "rules", "auto-ban (off by default)",
                                                           "records")}
    for field in FIELDS:
        if field.flags:
            groups[field.group].add_argument(*field.flags, **field.cli_kwargs())
    groups["LLM"].add_argument("--hf-model", help="huggingface: model directory, .gguf file, "
                               "or a hub name already in the local cache (sets --model)")
    groups["rules"].add_argument(
        "--rules", help=f"rules file (default {DEFAULT_RULES_PATH.relative_to(paths.PROJECT_ROOT)})")
    o = groups["records"]
    o.add_argument("--clear", action="store_true",
                   help="empty the analyzer's data files on start (threats, logs, history, status)")
    # The event store holds every verdict (netsentinel events --format jsonl
    # gives them back as recorded): the JSON-lines copy only where there is
    # no store, or when asked for.
    o.add_argument("--history", action="store_true",
                   help=f"also keep the full history in records/{HISTORY} "
                        "(default: only with --no-store; the event store holds it)")
    o.add_argument("--no-history", action="store_true",
                   help=f"keep no records/{HISTORY}, even with --no-store")
    o.add_argument("--store-dsn", metavar="DSN",
                   help=f"event store: postgresql://USER@HOST/DB for a fleet, or an SQLite file "
                        f"(default: records/{EVENTS_DB}, or ${DSN_ENV})")
    o.add_argument("--no-store", action="store_true", help="do not write the event store")
    o.add_argument("--store-max-age", type=_positive(float), default=DEFAULT_MAX_AGE_DAYS, metavar="DAYS",
                   help=f"delete stored events older than this (default {DEFAULT_MAX_AGE_DAYS:g})")
    o.add_argument("--store-max-mb", type=_positive(int), default=DEFAULT_MAX_BYTES >> 20, metavar="MB",
                   help=f"delete the oldest stored events beyond this size "
                        f"(default {DEFAULT_MAX_BYTES >> 20})")
    metrics.add_option(o)
    o.add_argument("--drain-timeout", type=float, default=10.0, metavar="SECONDS",
                   help="at EOF, wait at most this long for queued LLM answers (default 10)")
    o.add_argument("--status-interval", type=float, default=2.0, metavar="SECONDS")


def _positive(kind):
    def check(text: str):
        try:
            value = kind(text)
        except ValueError:
            value = 0
        if not value > 0:
            raise argparse.ArgumentTypeError(f"must be a number more than 0, got {text!r}")
        return value
    return check


def _common(p: argparse.ArgumentParser, default) -> None:
    p.add_argument("--records", default=default,
                   help="records directory (default: records/ beside the scripts, or $NETSENTINEL_RECORDS)")
    p.add_argument("--config", default=default,
                   help="whitelist file (default: filter_config.json, or $NETSENTINEL_CONFIG)")


def build_parser() -> argparse.ArgumentParser:
    p = tool_parser(PROG, description=DESCRIPTION, epilog=EPILOG)
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
    return validate_llm_config(raw)


def clear_records(store: RecordsStore, max_entries: int) -> list[str]:
    cleared = []
    store.write(PENDING_THREATS, [])
    store.write(DASHBOARD_LOGS, {"updated_at": None, "max_entries": max_entries, "entries": []})
    cleared += [PENDING_THREATS, DASHBOARD_LOGS]
    # The default event store too (a --store-dsn database is not ours to empty).
    for name in [ANALYZER_STATUS, *history_files(), EVENTS_DB, f"{EVENTS_DB}-wal",
                 f"{EVENTS_DB}-shm"]:
        if store.remove(name):
            cleared.append(name)
    return cleared


def serve_metrics(addr: tuple[str, int], analyzer, store: RecordsStore) -> None:
    def families():
        counts = dict.fromkeys(threats.STATUSES, 0)
        for t in threats.list_threats(store):
            counts[t.get("status")] = counts.get(t.get("status"), 0) + 1
        return metrics.analyzer_families(analyzer.status(), counts, analyzer.last_event)
    metrics.serve_or_exit(PROG, addr, families, metrics.LLM_SECONDS)


def _event_writer(args, store: RecordsStore) -> StoreProcess | None:
    if args.no_store:
        return None
    writer = StoreProcess(resolve_dsn(args.store_dsn, store), _warn,
                         Retention(args.store_max_age, args.store_max_mb << 20))
    writer.start()
    return writer


def run_analyzer(args) -> int:
    load_env()
    try:
        base = _base_config(args)
    except ValueError as e:
        _warn(f"error: {e}")
        return EXIT_USAGE
    store = RecordsStore(paths.records_dir(args.records), warn=_warn)
    if base["backend"] == "huggingface":
        try:
            HuggingFaceBackend.preflight(base)
        except BackendError as e:
            _warn(f"error: {e}")
            return EXIT_USAGE
    try:
        engine = RuleEngine(args.rules or DEFAULT_RULES_PATH, extra_lists=base["known_bad_files"],
                            warn=_warn)
    except RuleFileError as e:
        _warn(f"error: {e}")
        return EXIT_USAGE
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
    from .reader import quiet_collector
    from .status import summary_line

    analyzer = Analyzer(store, settings, engine, WhitelistFile(paths.config_path(args.config),
                                                               warn=_warn),
                        warn=_warn, history=args.history or (args.no_store and not args.no_history),
                        status_interval=args.status_interval, events=_event_writer(args, store))
    if args.metrics_addr:
        serve_metrics(args.metrics_addr, analyzer, store)
    analyzer.start()
    if analyzer.llm_cfg()["backend"] == "huggingface":
        # A local model loads now, with progress on stderr: one that cannot
        # load is an error at start, not a silent fallback at the first question.
        try:
            analyzer.manager.get(analyzer.llm_cfg(), quiet=True)
        except BackendError as e:
            _warn(f"error: {e}")
            analyzer.finish(0)
            return EXIT_FAILURE
    st = analyzer.status()
    _warn(f"reading events on stdin; backend {st['backend']} (setting: {st['backend_setting']}); "
          f"records in {store.root}")
    if sys.stdin.isatty():
        _warn("stdin is a terminal: pipe the loader's events in (see --help); Ctrl-D ends")
    drain = args.drain_timeout

    def stop(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    quiet_collector()
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
        reason = " ".join(str(t.get("reason", "")).split())
        print(f"{t.get('id', '?'):<12}  {t.get('status', '?'):<8}  {t.get('level', '?'):<8}  "
              f"{t.get('count', 1):>5}  {str(threats.target_of(t)):<18}  "
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
                                whitelist=wl, protected=ProtectedCache().get(wl.config["protect_ssh_ports"]))
            print(f"approved {t['id']}: ban command queued: {json.dumps(t['ban_command'])}")
            return 0
        t = threats.reject(store, args.id, by="cli", note=args.note,
                           whitelist_file=wl_file if args.whitelist else None)
        extra = f"; whitelisted {t['whitelisted']}" if t.get("whitelisted") else ""
        print(f"rejected {t['id']}{extra}")
        return 0
    except BanRefused as e:
        _warn(f"error: ban refused: {e}; threat stays pending (reject it, or ban by hand)")
    except (DecisionError, ConfigError, StoreError) as e:
        _warn(f"error: {e}")
    return 1


@quiet_on_closed_stdout
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "threats":
            return run_threats(args)
        return run_analyzer(args)
    except StoreError as e:  # e.g. a records directory that cannot be created
        _warn(f"error: {e}")
        return EXIT_FAILURE
