"""`netsentinel bans list|add|del`: what the loader enforces, and commands
for it. add/del validate exactly as the loader validates ban_commands.json
(netsentinel.bancheck) and queue through the store's command API, so a ban
refused here would have been refused by the loader, with the same words."""

from __future__ import annotations

import time

from ..bancheck import BanRefused, check_policy, parse_command
from ..cliargs import EXIT_FAILURE, EXIT_USAGE
from ..liveness import ago, duration, expires, liveness
from ..netinfo import protected_addresses
from ..records import BANNED_IPS, LOADER_STATUS
from .common import duration_arg, fail, open_store, one_line, print_json, print_table, whitelist_file

SOURCE = "manual"


def active_bans(store) -> dict:
    bans = store.read(BANNED_IPS, default={}, on_corrupt="default")
    return bans if isinstance(bans, dict) else {}


def cmd_list(args) -> int:
    bans = active_bans(open_store(args))
    if args.source:
        bans = {k: v for k, v in bans.items() if isinstance(v, dict) and v.get("source") == args.source}
    if args.json:
        print_json(bans)
        return 0
    now = time.time()
    rows = []
    for ip, rec in bans.items():
        rec = rec if isinstance(rec, dict) else {}
        rows.append((ip, rec.get("source"), ago(rec.get("banned_at"), now), expires(rec.get("expires_at"), now),
                     rec.get("drops", 0), one_line(rec.get("reason"), 60)))
    print_table(("ADDRESS", "SOURCE", "BANNED", "EXPIRES", "DROPS", "REASON"), rows, "no active bans")
    return 0


def _commands(args, action: str) -> list[dict]:
    """Every command is checked before any is queued: one bad address queues
    nothing. Shape first (a usage error), then the loader's ban policy."""
    raws, cmds = [], []
    for target in args.addresses:
        raw = {"action": action, "ip": target, "source": args.source}
        if action == "ban":
            raw.update({k: v for k, v in (("reason", args.reason), ("ttl_seconds", args.ttl)) if v})
        try:
            cmds.append(parse_command(raw))
        except BanRefused as e:
            fail(f"{e}; nothing queued", EXIT_USAGE)
        raws.append(raw)
    if action == "ban":
        try:
            wl = whitelist_file(args).load()
        except Exception as e:  # ConfigError, StoreError, OSError: one line either way
            fail(f"cannot check the bans against the whitelist: {e}; nothing queued", EXIT_FAILURE)
        protected = protected_addresses(wl.config["protect_ssh_ports"])
        for cmd in cmds:
            try:
                check_policy(cmd, wl, protected)
            except BanRefused as e:
                fail(f"ban refused: {e}; nothing queued", EXIT_FAILURE)
    for raw, cmd in zip(raws, cmds):
        raw["ip"] = cmd.key
    return raws


def cmd_change(args, action: str) -> int:
    store = open_store(args)
    commands = _commands(args, action)
    with store.locked():  # all or nothing for another reader of the queue
        for raw in commands:
            store.append_command(raw)
    for raw in commands:
        ttl = f" for {duration(raw['ttl_seconds'])}" if raw.get("ttl_seconds") else ""
        print(f"queued {action} {raw['ip']}{ttl}")
    loader = liveness("loader", store.read(LOADER_STATUS, default={}, on_corrupt="default") or {})
    if not loader.running:
        # Queued is not enforced: say so, the command waits for the next loader.
        print(f"note: {loader.text}; the command waits in {store.root}/ban_commands.json")
    return 0


def register(sub) -> None:
    b = sub.add_parser("bans", help="list active bans, ban or unban addresses")
    bsub = b.add_subparsers(dest="action", required=True, metavar="{list,add,del}")
    ls = bsub.add_parser("list", help="active bans from banned_ips.json")
    ls.add_argument("--json", action="store_true", help="the banned_ips.json object")
    ls.add_argument("--source", help="only bans from this source (manual, auto, fail2ban, ...)")
    ls.set_defaults(run=cmd_list)
    add = bsub.add_parser("add", help="ban addresses or networks (checked as the loader checks)")
    add.add_argument("addresses", nargs="+", metavar="ADDRESS", help="1.2.3.4, 10.9.0.0/16, 2001:db8::1")
    add.add_argument("--ttl", type=duration_arg, metavar="DURATION", help="expiry: 3600, 90m, 12h, 7d")
    add.add_argument("--reason", help="why, shown with the ban")
    add.add_argument("--source", default=SOURCE, help=f"who asks (default {SOURCE}; e.g. fail2ban)")
    add.set_defaults(run=lambda a: cmd_change(a, "ban"))
    rm = bsub.add_parser("del", help="unban addresses or networks")
    rm.add_argument("addresses", nargs="+", metavar="ADDRESS")
    rm.add_argument("--source", default=SOURCE, help=f"who asks (default {SOURCE})")
    rm.set_defaults(run=lambda a: cmd_change(a, "unban"))
