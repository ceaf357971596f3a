"""user_whitelist.py - list and edit NetSentinel's whitelist (filter_config.json).

Trusted addresses (hosts or CIDRs), processes (a comm name of at most 15
characters, or an absolute exe path) and destination ports are never
reported by the loader and can never be banned. The loader and analyzer
re-read the file when it changes, so an edit here takes effect at once.

All reads and writes go through netsentinel.whitelist.WhitelistFile: edits are
validated, made under the store lock and written atomically. No root and no
bcc needed (only write access to the file's folder for add/remove).

USAGE: python3 user_whitelist.py [--config FILE] {list,add,remove,check} ...

Output contract:
  list --json   one JSON object: {"path": str, "exists": bool, "config": {...}}
                where config is the complete, normalised filter_config.json.
  exit codes    0 done; 1 the file is invalid or cannot be read/written;
                2 bad input (usage, invalid value) - the file is left untouched;
                141 stdout closed early (| head). See netsentinel/cliargs.py.
  errors        one line on stderr: "user_whitelist.py: error: ...".
"""

from __future__ import annotations

import argparse
import json

from . import paths
from .cliargs import EXIT_FAILURE, EXIT_USAGE, die, quiet_on_closed_stdout, tool_name, tool_parser
from .store import StoreError
from .whitelist import KINDS, ConfigError, WhitelistFile, normalize_entry

PROG = "user_whitelist.py"
EXIT_INVALID_FILE = EXIT_FAILURE

EPILOG = """examples:
  python3 user_whitelist.py list
  python3 user_whitelist.py list --json
  python3 user_whitelist.py add ip 192.0.2.10 10.20.0.0/16 2001:db8::/48
  python3 user_whitelist.py add process chronyd /usr/sbin/sshd
  python3 user_whitelist.py add port 53 123
  python3 user_whitelist.py remove ip 192.0.2.10
  python3 user_whitelist.py check                  # exit 1 if the file is invalid
  python3 user_whitelist.py --config /tmp/lab_filter.json add ip 10.200.0.2
  NETSENTINEL_CONFIG=/tmp/lab_filter.json python3 user_whitelist.py list

the file: --config FILE, else $NETSENTINEL_CONFIG, else filter_config.json
beside this script. An invalid or unreadable file is a runtime failure (1);
a bad value is a usage error (2) and nothing is written.
"""


# The name errors carry: "netsentinel whitelist" runs this same code (main's prog).
_prog = PROG


def fail(message: str, code: int):
    die(_prog, message, code)


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    # --config is accepted before or after the subcommand; SUPPRESS keeps the
    # subcommand's copy from overwriting a value given before it.
    config_opt = argparse.ArgumentParser(add_help=False)
    config_opt.add_argument("--config", metavar="FILE", default=argparse.SUPPRESS,
                            help="whitelist file (default: $NETSENTINEL_CONFIG or "
                                 "filter_config.json beside this script)")
    p = tool_parser(prog, description="List and edit NetSentinel's whitelist.", epilog=EPILOG,
                    parents=[config_opt])
    # Subcommand parsers are the same class: their errors are one line too.
    sub = p.add_subparsers(dest="command", required=True, metavar="{list,add,remove,check}")
    ls = sub.add_parser("list", parents=[config_opt], help="show the entries and settings")
    ls.add_argument("--json", action="store_true", help="one JSON object for machines")
    for name, verb in (("add", "whitelist"), ("remove", "stop whitelisting")):
        e = sub.add_parser(name, parents=[config_opt], help=f"{verb} one or more entries")
        e.add_argument("kind", choices=sorted(KINDS), help="ip (host or CIDR), process, port")
        e.add_argument("values", nargs="+", metavar="VALUE")
    sub.add_parser("check", parents=[config_opt],
                   help="validate the file and show what is in force (exit 1 if invalid)")
    return p


def load_or_fail(wf: WhitelistFile):
    try:
        return wf.load()
    except (ConfigError, StoreError, OSError) as e:
        fail(f"{wf.path}: {e}", EXIT_INVALID_FILE)


def print_table(wf: WhitelistFile, cfg: dict, exists: bool) -> None:
    print(f"whitelist: {wf.path}" + ("" if exists else " (no file: defaults in force)"))
    rows = [(kind, str(v)) for kind, key in KINDS.items() for v in cfg[key]]
    if rows:
        width = max(len(k) for k, _ in rows)
        print(f"  {'KIND':<{width}}  VALUE")
        for kind, value in rows:
            print(f"  {kind:<{width}}  {value}")
    else:
        print("  (no entries)")
    mbp = cfg["min_ban_prefix"]
    print(f"whitelisted_connections: {cfg['whitelisted_connections']}")
    print(f"protect_ssh_ports: {', '.join(map(str, cfg['protect_ssh_ports'])) or '(none)'}")
    print(f"min_ban_prefix: ipv4 /{mbp['ipv4']}, ipv6 /{mbp['ipv6']}")


def cmd_show(wf: WhitelistFile, as_json: bool, checking: bool = False) -> int:
    cfg = load_or_fail(wf).config
    exists = wf.store.stat(wf.name) is not None
    if checking:
        print(f"ok: {wf.path} is valid" if exists else f"ok: {wf.path} does not exist")
    if as_json:
        print(json.dumps({"path": str(wf.path), "exists": exists, "config": cfg}, indent=2))
    else:
        print_table(wf, cfg, exists)
    return 0


def cmd_edit(wf: WhitelistFile, kind: str, values: list[str], remove: bool) -> int:
    # Every value is checked before anything is written: one bad value
    # leaves the file exactly as it was.
    try:
        entries = [normalize_entry(kind, v) for v in values]
    except ConfigError as e:
        fail(str(e), EXIT_USAGE)
    results = []
    try:
        # One lock around all the edits, so another writer never sees half of them.
        with wf.store.locked():
            for entry in entries:
                results.append(wf.edit(kind, entry, remove=remove))
    except (ConfigError, StoreError, OSError) as e:
        fail(f"{wf.path}: {e}; nothing changed", EXIT_INVALID_FILE)
    for changed, entry in results:
        if remove:
            print(f"removed {kind} {entry}" if changed else f"{kind} {entry} was not whitelisted")
        else:
            print(f"added {kind} {entry}" if changed else f"{kind} {entry} already whitelisted")
    return 0


@quiet_on_closed_stdout
def main(argv: list[str] | None = None, prog: str = PROG) -> int:
    global _prog
    _prog = tool_name(prog)
    args = build_parser(prog).parse_args(argv)
    path = paths.config_path(getattr(args, "config", None))
    try:
        wf = WhitelistFile(path)
    except (StoreError, OSError) as e:
        fail(str(e), EXIT_INVALID_FILE)
    if args.command in ("list", "check"):
        return cmd_show(wf, getattr(args, "json", False), checking=args.command == "check")
    return cmd_edit(wf, args.kind, args.values, remove=args.command == "remove")
