"""unified_ebpf.py - NetSentinel's kernel loader (run as root).

Watches every outbound TCP connection (kprobe on tcp_v4_connect/tcp_v6_connect,
falling back to the sock:inet_sock_set_state tracepoint), enforces bans with
an XDP ingress filter plus cgroup connect/sendmsg blocks, applies ban
commands from records/ban_commands.json, and streams JSON-lines events on
stdout (schema: docs/events.md). Diagnostics go to stderr.

USAGE: sudo .venv/bin/python -u unified_ebpf.py [-i IFACE] [--no-xdp] [--ban IP ...]
"""

import argparse
import os

from .. import netinfo, paths
from ..addresses import AddressError, parse_target
from ..cliargs import EXIT_FAILURE, die, quiet_on_closed_stdout, tool_parser
from .fleet import add_fleet_arguments, fleet_options

PROG = "unified_ebpf.py"

EPILOG = """examples:
  sudo .venv/bin/python -u unified_ebpf.py                  # default-route interface
  sudo .venv/bin/python -u unified_ebpf.py -i eth0
  sudo .venv/bin/python -u unified_ebpf.py -i eth0 --ban 203.0.113.7 --ban 198.51.100.0/24
  sudo .venv/bin/python -u unified_ebpf.py --no-xdp         # monitor only, enforce nothing
  sudo sh -c '.venv/bin/python -u unified_ebpf.py -i eth0 | .venv/bin/python -u llm_analyzer.py'

ban by hand while it runs (picked up within 100 ms):
  echo '[{"action": "ban", "ip": "1.2.3.4", "reason": "Malicious scan"}]' | sudo tee records/ban_commands.json
  echo '[{"action": "unban", "ip": "1.2.3.4"}]' | sudo tee records/ban_commands.json

XDP filter rules (protocol, ports, TCP flags, ICMP type, source CIDR; drop or count):
  echo '[{"action": "add_rule", "rule": {"id": "ssdp", "action": "drop", "proto": "udp", "sport": 1900}}]' \
    | sudo tee records/rule_commands.json

Refused commands (bad JSON, bad address, whitelisted, over-broad, this host or its
gateway, a live SSH peer) are kept in records/ban_commands.rejected.json
(rules: records/rule_commands.rejected.json).
"""


def positive_int(lo: int, hi: int):
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if not lo <= v <= hi:
            raise argparse.ArgumentTypeError(f"{v} is outside {lo}-{hi}")
        return v
    return parse


def ban_target(text: str) -> str:
    try:
        parse_target(text)
    except AddressError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


def build_parser() -> argparse.ArgumentParser:
    p = tool_parser(PROG, description=__doc__.split("\n\n")[1].replace("\n", " "), epilog=EPILOG)
    p.add_argument("-i", "--interface", help="interface for the XDP filter "
                   "(default: the one holding the default route)")
    p.add_argument("--no-xdp", action="store_true",
                   help="monitor only: attach no XDP or cgroup program; ban commands stay queued")
    p.add_argument("--no-cgroup", action="store_true",
                   help="XDP only: do not block connect()/sendmsg() to banned addresses")
    p.add_argument("--ban", action="append", default=[], type=ban_target, metavar="IP",
                   help="ban an address or CIDR at startup (repeatable)")
    p.add_argument("--records", help="records directory (default: records/ beside this script, "
                   "or $NETSENTINEL_RECORDS)")
    p.add_argument("--config", help="whitelist file (default: filter_config.json beside this "
                   "script, or $NETSENTINEL_CONFIG)")
    p.add_argument("--capture", choices=("auto", "kprobe", "tracepoint"), default="auto",
                   help="connection capture path (default: kprobe, else tracepoint)")
    p.add_argument("--xdp-mode", choices=("auto", "native", "generic"), default="auto",
                   help="XDP attach mode (default: native, else generic)")
    p.add_argument("--max-bans", type=positive_int(1, 16 * 1048576), default=1048576,
                   help="capacity of each ban map (default: %(default)s)")
    p.add_argument("--buffer-pages", type=positive_int(1, 65536), default=64,
                   help="perf buffer pages per CPU (a power of two; default: %(default)s)")
    p.add_argument("--stats-interval", type=float, default=10.0,
                   help="seconds between stats events (default: %(default)s)")
    p.add_argument("--flow-interval", type=float, default=1.0,
                   help="seconds between flow (inbound per-source rate) samples (default: %(default)s)")
    p.add_argument("--flow-top", type=positive_int(0, 1000), default=5,
                   help="top talkers reported per flow sample (default: %(default)s)")
    p.add_argument("--flow-pps-threshold", type=float, default=1000.0,
                   help="also report every source above this many packets/s (default: %(default)s)")
    add_fleet_arguments(p)
    p.add_argument("--stack", action=argparse.BooleanOptionalAction, default=True,
                   help="count kernel packet drops per reason and place (docs/STACK.md; default: on)")
    p.add_argument("--stack-interval", type=float, default=2.0,
                   help="seconds between drops events (default: %(default)s)")
    p.add_argument("--duration", type=float, help=argparse.SUPPRESS)  # tests, benchmarks
    p.add_argument("--ebpf", action="store_true", help=argparse.SUPPRESS)
    return p


def dump_ebpf(args) -> int:
    """Print the BPF sources and cflags that would load, then exit (no root)."""
    from ..kernel.enforcer import Enforcer
    from ..kernel.monitor import ConnectionMonitor
    mon = ConnectionMonitor(args.capture)
    for mode in ("kprobe", "tracepoint"):
        src, flags = mon.source_and_flags(mode)
        print(f"// ---- conn_monitor ({mode}) cflags: {' '.join(flags)}\n{src}")
    if not args.no_xdp:
        src, flags = Enforcer(None, max_bans=args.max_bans).source_and_flags()
        print(f"// ---- enforce cflags: {' '.join(flags)}\n{src}")
    return 0


@quiet_on_closed_stdout
def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        fleet = fleet_options(args)
    except ValueError as e:
        parser.error(str(e))
    if args.ebpf:
        return dump_ebpf(args)
    if args.no_xdp and args.ban:
        parser.error("--ban needs enforcement; drop --no-xdp")
    if args.buffer_pages & (args.buffer_pages - 1):
        parser.error("--buffer-pages must be a power of two")
    if not args.stack_interval > 0:
        parser.error("--stack-interval must be a positive number of seconds")
    if os.geteuid() != 0:
        die(PROG, "must run as root (try: sudo .venv/bin/python -u unified_ebpf.py)", EXIT_FAILURE)
    iface = None
    if not args.no_xdp:
        iface = args.interface or netinfo.default_route_interface()
        if not iface:
            parser.error("no default route to pick an interface from; pass -i IFACE")
        if not netinfo.interface_exists(iface):
            parser.error(f"no interface named {iface!r}; pass -i IFACE (see: ip link)")

    from ..store import StoreError
    from .run import Loader, LoaderOptions
    opts = LoaderOptions(
        records=str(paths.records_dir(args.records)), config=str(paths.config_path(args.config)),
        interface=iface, enforce=not args.no_xdp, cgroup=not args.no_cgroup,
        xdp_mode=args.xdp_mode, capture=args.capture, bans=args.ban, max_bans=args.max_bans,
        page_cnt=args.buffer_pages, stats_interval=args.stats_interval,
        flow_interval=args.flow_interval, flow_top=args.flow_top,
        flow_pps_threshold=args.flow_pps_threshold, duration=args.duration, fleet=fleet,
        stack=args.stack, stack_interval=args.stack_interval)
    try:
        return Loader(opts).run()
    except StoreError as e:
        die(PROG, str(e), EXIT_FAILURE)
