"""`netsentinel` (also `python -m netsentinel`): one command for people and
scripts. See docs/SERVICE.md; errors and exit codes follow
netsentinel/cliargs.py."""

from __future__ import annotations

import argparse
import sys

from .. import whitelist_cli
from ..cliargs import EXIT_FAILURE, quiet_on_closed_stdout, tool_parser
from ..store import StoreError
from . import bans, contain, events, status, threats, unload
from .common import PROG, fail

EPILOG = f"""examples:
  {PROG} status                                   # health, XDP mode, bans, drops, pending threats
  {PROG} status --json
  {PROG} bans list                                # --json, --source fail2ban
  {PROG} bans add 203.0.113.7 --ttl 1h --reason "ssh brute force" --source fail2ban
  {PROG} bans del 203.0.113.7
  {PROG} contain add --pid 4242 --ttl 1d --reason "outbound scan"   # its executable too
  {PROG} contain list                             # contain release pid:4242
  {PROG} threats list --category host_sweep --older-than 1h
  {PROG} threats show 3f9c2a1b7d4e
  {PROG} threats approve 3f9c2a1b7d4e --ttl 7d
  {PROG} threats reject --category host_sweep --older-than 1h --note "our monitoring"
  {PROG} events --since 1h --level HIGH+ --process curl   # the event history (--help)
  sudo {PROG} unload -i eth0                      # take the pinned enforcement down (--json)
  {PROG} whitelist add ip 192.0.2.10              # the user_whitelist.py commands
  {PROG} --records /srv/netsentinel/records status

records/: --records DIR, else $NETSENTINEL_RECORDS, else records/ beside the
scripts; the whitelist: --config FILE, else $NETSENTINEL_CONFIG, else
filter_config.json. A ban queued here is applied by the running loader within
about a second; `{PROG} bans list` shows it once applied."""

GLOBAL_WITH_VALUE = ("--records", "--config")


def build_parser() -> argparse.ArgumentParser:
    p = tool_parser(PROG, description="NetSentinel's state and decisions from a terminal.",
                    epilog=EPILOG)
    p.add_argument("--records", metavar="DIR", help="records directory")
    p.add_argument("--config", metavar="FILE", help="whitelist file (filter_config.json)")
    sub = p.add_subparsers(dest="command", required=True,
                           metavar="{status,bans,contain,threats,events,unload,whitelist}")
    status.register(sub)
    bans.register(sub)
    contain.register(sub)
    threats.register(sub)
    events.register(sub)
    unload.register(sub)
    # Parsed by user_whitelist.py's own parser (see main); listed here for --help.
    sub.add_parser("whitelist", help="list and edit trusted addresses, processes, ports "
                                     "(netsentinel whitelist --help)", add_help=False)
    return p


def _whitelist_argv(argv: list[str]) -> list[str] | None:
    """The arguments after `whitelist` (with a --config given before it),
    or None when the command is not `whitelist`."""
    i, config = 0, []
    while i < len(argv):
        a = argv[i]
        if a in GLOBAL_WITH_VALUE and i + 1 < len(argv):
            if a == "--config":
                config = ["--config", argv[i + 1]]
            i += 2
        elif any(a.startswith(f"{g}=") for g in GLOBAL_WITH_VALUE):
            if a.startswith("--config="):
                config = ["--config", a.split("=", 1)[1]]
            i += 1
        elif a == "whitelist":
            return argv[i + 1:] + config
        else:
            return None
    return None


@quiet_on_closed_stdout
def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    rest = _whitelist_argv(argv)
    if rest is not None:
        return whitelist_cli.main(rest, prog=f"{PROG} whitelist")
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except StoreError as e:  # records/ unreadable, a lock that never came, ...
        fail(str(e), EXIT_FAILURE)
