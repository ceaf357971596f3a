"""Dashboard settings from the command line after `--` and the environment.

streamlit owns the command line up to `--`; what follows reaches the script
in sys.argv:  streamlit run dashboard.py -- --records DIR --config FILE
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from ..cliargs import OneLineParser, tool_parser
from ..paths import config_path, records_dir

DEFAULT_REFRESH_SECONDS = 5.0
REFRESH_ENV = "NETSENTINEL_DASHBOARD_REFRESH"

EPILOG = """\
examples:
  streamlit run dashboard.py
  streamlit run dashboard.py -- --records /tmp/rec --config /tmp/filter_config.json
  streamlit run dashboard.py -- --refresh 2
  NETSENTINEL_RECORDS=/tmp/rec streamlit run dashboard.py
  python -m netsentinel.dashboard.access token --url 127.0.0.1:8501   # the login URL
signing in: the token (records/.dashboard_token, or NETSENTINEL_DASHBOARD_TOKEN)
or NETSENTINEL_DASHBOARD_PASSWORD (a password or its hash), on every address.
"""


@dataclass(frozen=True)
class Settings:
    records: Path
    config: Path
    refresh_seconds: float
    argv_error: str | None = None


class _ArgError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    # Inside Streamlit a bad flag must not end the script (argparse would exit).
    def error(self, message):
        raise _ArgError(message)


def build_parser(*, raising: bool = False) -> argparse.ArgumentParser:
    ap = tool_parser(
        "streamlit run dashboard.py --", parser_class=_Parser if raising else OneLineParser,
        description="NetSentinel dashboard: watch and steer the loader and analyzer "
                    "through records/ and filter_config.json.",
        epilog=EPILOG, allow_abbrev=False)
    ap.add_argument("--records", metavar="DIR",
                    help="records directory (default: NETSENTINEL_RECORDS, else <checkout>/records)")
    ap.add_argument("--config", metavar="FILE",
                    help="whitelist file (default: NETSENTINEL_CONFIG, else <checkout>/filter_config.json)")
    ap.add_argument("--refresh", type=float, metavar="SECONDS",
                    help=f"auto-refresh interval, 0 = off (default: {REFRESH_ENV}, "
                         f"else {DEFAULT_REFRESH_SECONDS:g})")
    return ap


def _script_args(argv: list[str]) -> list[str]:
    """Flags meant for us: only when the script was started as dashboard.py
    (under pytest/AppTest sys.argv belongs to pytest)."""
    if argv and Path(argv[0]).name == "dashboard.py":
        return argv[1:]
    return []


def load_settings(argv: list[str] | None = None) -> Settings:
    """Settings in force; a bad flag is reported in argv_error, never fatal."""
    argv = sys.argv if argv is None else argv
    parser = build_parser(raising=True)
    error = None
    try:
        ns = parser.parse_args(_script_args(argv))
    except (_ArgError, SystemExit) as e:  # SystemExit: `-- --help` inside Streamlit
        error = (f"ignored the dashboard's arguments: {e}" if isinstance(e, _ArgError)
                 else "see `python dashboard.py --help` for the dashboard's arguments")
        ns = argparse.Namespace(records=None, config=None, refresh=None)
    refresh = ns.refresh
    if refresh is None:
        raw = os.environ.get(REFRESH_ENV)
        try:
            refresh = float(raw) if raw else DEFAULT_REFRESH_SECONDS
        except ValueError:
            error = f"{REFRESH_ENV}={raw!r} is not a number of seconds; using {DEFAULT_REFRESH_SECONDS:g}"
            refresh = DEFAULT_REFRESH_SECONDS
    return Settings(records=records_dir(ns.records), config=config_path(ns.config),
                    refresh_seconds=max(0.0, refresh), argv_error=error)
