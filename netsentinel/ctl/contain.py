"""`netsentinel contain list|add|release`: the processes and executables the
loader keeps off the network (issue 12; docs/ARCHITECTURE.md, "Containing a
local process"). add/release are checked by netsentinel.containcmd exactly as
the loader checks contain_commands.json, then queued through the store's
command API; the loader's own policy (init, itself, sshd, shared shells and
interpreters, a reused pid) is applied when it consumes them and a refusal
lands in contain_commands.rejected.json."""

from __future__ import annotations

import time

from ..cliargs import EXIT_USAGE
from ..containcmd import ContainRefused, contain_command, exe_id, parse_command, pid_id
from ..liveness import ago, expires, liveness
from ..records import CONTAIN_COMMANDS, CONTAINED, LOADER_STATUS
from .common import duration_arg, fail, open_store, one_line, print_json, print_table

SOURCE = "manual"


def cmd_list(args) -> int:
    recs = open_store(args).read(CONTAINED, default={}, on_corrupt="default")
    recs = recs if isinstance(recs, dict) else {}
    if args.json:
        print_json(recs)
        return 0
    now = time.time()
    rows = []
    for rid, rec in recs.items():
        rec = rec if isinstance(rec, dict) else {}
        rows.append((rid, one_line(rec.get("exe"), 50), ago(rec.get("contained_at"), now),
                     expires(rec.get("expires_at"), now),
                     rec.get("blocked", 0), rec.get("children", "-"), one_line(rec.get("reason"), 50)))
    print_table(("ID", "EXECUTABLE", "CONTAINED", "EXPIRES", "BLOCKED", "CHILDREN", "REASON"), rows,
                "nothing contained")
    return 0


def _queue(args, raw: dict) -> int:
    try:
        cmd = parse_command(raw)
    except ContainRefused as e:
        fail(f"{e}; nothing queued", EXIT_USAGE)
    store = open_store(args)
    store.append_command(raw, name=CONTAIN_COMMANDS)
    print(f"queued {cmd.action} {', '.join(cmd.ids())}")
    loader = liveness("loader", store.read(LOADER_STATUS, default={}, on_corrupt="default") or {})
    if not loader.running:
        print(f"note: {loader.text}; the command waits in {store.root}/{CONTAIN_COMMANDS}")
    else:
        print(f"`netsentinel contain list` shows it once applied; refusals: "
              f"{store.root}/contain_commands.rejected.json")
    return 0


def cmd_add(args) -> int:
    if args.pid is None and args.exe is None:
        fail("give --pid, --exe or both; nothing queued", EXIT_USAGE)
    try:
        raw = contain_command(pid=args.pid, exe=args.exe, ttl_seconds=args.ttl, reason=args.reason,
                              source=args.source, signal=args.stop,
                              by_exe=None if args.pid is None else not args.process_only)
    except ContainRefused as e:
        fail(f"{e}; nothing queued", EXIT_USAGE)
    return _queue(args, raw)


def cmd_release(args) -> int:
    if args.id:
        rid = args.id
    elif args.pid is not None:
        rid = pid_id(args.pid)
    elif args.exe:
        rid = exe_id(args.exe)
    else:
        fail("give an ID (see `contain list`), --pid or --exe; nothing queued", EXIT_USAGE)
    return _queue(args, {"action": "release", "id": rid, "source": args.source})


def register(sub) -> None:
    c = sub.add_parser("contain", help="keep a local process (and its executable) off the network")
    csub = c.add_subparsers(dest="action", required=True, metavar="{list,add,release}")
    ls = csub.add_parser("list", help="what contained.json holds")
    ls.add_argument("--json", action="store_true", help="the contained.json object")
    ls.set_defaults(run=cmd_list)
    add = csub.add_parser("add", help="contain a process (by pid) and/or an executable (by path)")
    add.add_argument("--pid", type=int, help="the process; its children are contained with it")
    add.add_argument("--exe", help="absolute path: every run of that file; with --pid, the "
                                   "executable the process must still be running (a reused pid is refused)")
    add.add_argument("--process-only", action="store_true",
                     help="with --pid: not its executable (other runs of it stay free)")
    add.add_argument("--ttl", type=duration_arg, metavar="DURATION", help="expiry: 3600, 90m, 12h, 7d")
    add.add_argument("--reason", help="why, shown with the entry")
    add.add_argument("--stop", choices=("TERM", "KILL"),
                     help="also send this signal once contained (sockets it already has keep working "
                          "otherwise)")
    add.add_argument("--source", default=SOURCE, help=f"who asks (default {SOURCE})")
    add.set_defaults(run=cmd_add)
    rel = csub.add_parser("release", help="lift a containment")
    rel.add_argument("id", nargs="?", metavar="ID", help="pid:N or exe:/path, as `contain list` shows")
    rel.add_argument("--pid", type=int)
    rel.add_argument("--exe")
    rel.add_argument("--source", default=SOURCE, help=f"who asks (default {SOURCE})")
    rel.set_defaults(run=cmd_release)
