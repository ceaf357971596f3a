"""unified_ebpf.py - NetSentinel's kernel loader (run as root).

Watches every outbound TCP connection (kprobe on tcp_v4_connect/tcp_v6_connect,
falling back to the sock:inet_sock_set_state tracepoint), enforces bans with
an XDP ingress filter plus cgroup connect/sendmsg blocks, applies ban
commands from records/ban_commands.json, and streams JSON-lines events on
stdout (schema: docs/events.md). Diagnostics go to stderr.

Enforcement is pinned in bpffs and outlives the process: stopping or
crashing ends monitoring, not protection; --unload removes it.

USAGE: sudo .venv/bin/python -u unified_ebpf.py [-i IFACE] [--no-xdp] [--ban IP ...]
"""

import argparse
import os
import re
import sys

from .. import metrics, netinfo, paths
from ..abi import MAX_BANS, MAX_BANS_LIMIT, check_pin_dir
from ..addresses import AddressError, parse_target
from ..cliargs import EXIT_FAILURE, EXIT_USAGE, die, quiet_on_closed_stdout, tool_parser
from ..kernel.pins import DEFAULT_PIN_ROOT
from .fleet import add_fleet_arguments, fleet_options
from .flows import AGG_PPS_DEFAULT
from . import starting

PROG = "unified_ebpf.py"
# auditd's default priority_boost: a host-defence process outranks the
# ordinary processes whose flood it has to see through (docs/benchmarks.md §2).
PRIORITY_BOOST = 4

EPILOG = """examples:
  sudo .venv/bin/python -u unified_ebpf.py                  # default-route interface
  sudo .venv/bin/python -u unified_ebpf.py -i eth0
  sudo .venv/bin/python -u unified_ebpf.py -i eth0 --ban 203.0.113.7 --ban 198.51.100.0/24
  sudo .venv/bin/python -u unified_ebpf.py --no-xdp         # monitor only, enforce nothing
  sudo .venv/bin/python -u unified_ebpf.py --unload -i eth0  # remove the pinned enforcement
  sudo sh -c '.venv/bin/python -u unified_ebpf.py -i eth0 | .venv/bin/python -u llm_analyzer.py'

ban by hand while it runs (picked up within 100 ms; append with -a / >> so that
two people writing at once lose nothing; a write replaced before it was read is
reported in records/ban_commands.rejected.json):
  echo '[{"action": "ban", "ip": "1.2.3.4", "reason": "Malicious scan"}]' | sudo tee -a records/ban_commands.json
  echo '[{"action": "unban", "ip": "1.2.3.4"}]' | sudo tee -a records/ban_commands.json

scripts that write often: the drop directory (one file per command or list, any
name not starting with '.' nor ending in .tmp; consumed, then removed; nothing lost):
  f=records/ban_commands.d/$(date +%s%N)-$$.json   # rules: records/rule_commands.d/
  echo '{"action": "ban", "ip": "1.2.3.4"}' | sudo tee "$f.tmp" >/dev/null && sudo mv "$f.tmp" "$f"

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


def pin_dir(text: str) -> str:
    try:
        return check_pin_dir(os.path.abspath(text).rstrip("/") or "/")
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def test_define(text: str) -> tuple[str, int]:
    """NS_TEST_NAME=INT: a -D flag that changes the program (upgrade tests)."""
    m = re.fullmatch(r"(NS_TEST_[A-Z0-9_]{1,40})=(\d{1,9})", text)
    if not m:
        raise argparse.ArgumentTypeError("expected NS_TEST_NAME=INTEGER")
    return m.group(1), int(m.group(2))


def build_parser() -> argparse.ArgumentParser:
    p = tool_parser(PROG, description=__doc__.split("\n\n")[1].replace("\n", " "), epilog=EPILOG)
    p.add_argument("-i", "--interface", help="interface for the XDP filter "
                   "(default: the one holding the default route)")
    p.add_argument("--no-xdp", action="store_true",
                   help="monitor only: attach no XDP or cgroup program; ban commands stay queued")
    p.add_argument("--no-cgroup", action="store_true",
                   help="XDP only: do not block connect()/sendmsg() to banned addresses")
    p.add_argument("--no-raw-sockets", action="store_true",
                   help="do not watch outbound raw/packet sockets and UDP (raw_socket, egress, udp events)")
    p.add_argument("--ban", action="append", default=[], type=ban_target, metavar="IP",
                   help="ban an address or CIDR at startup (repeatable)")
    p.add_argument("--records", help="records directory (default: records/ beside this script, "
                   "or $NETSENTINEL_RECORDS)")
    p.add_argument("--config", help="whitelist file (default: filter_config.json beside this "
                   "script, or $NETSENTINEL_CONFIG)")
    p.add_argument("--capture", choices=("auto", "kprobe", "tracepoint"), default="auto",
                   help="connection capture path (default: kprobe, else tracepoint)")
    p.add_argument("--xdp-mode", choices=("auto", "native", "generic", "tc"), default="auto",
                   help="ingress filter: native XDP, generic XDP, tc (TCX ingress, Linux 6.6+); "
                   "default auto: native, else tc (generic only when asked: it can taint the kernel)")
    p.add_argument("--pin-dir", default=DEFAULT_PIN_ROOT, type=pin_dir,
                   help="bpffs directory for the pinned maps and links, one subdirectory per "
                   "interface (default: %(default)s)")
    p.add_argument("--unload", action="store_true",
                   help="detach and unpin everything pinned for -i IFACE, print what, and exit")
    p.add_argument("--json", action="store_true",
                   help="with --unload: one JSON object {interface, pin_dir, removed, actions}")
    p.add_argument("--max-bans", type=positive_int(1, MAX_BANS_LIMIT), default=MAX_BANS,
                   help="capacity of each ban map (default: %(default)s)")
    p.add_argument("--buffer-pages", type=positive_int(1, 65536), default=64,
                   help="connection event buffer pages per CPU (a power of two; the ring "
                        "buffer gets this times the CPUs; default: %(default)s)")
    p.add_argument("--stats-interval", type=float, default=10.0,
                   help="seconds between stats events (default: %(default)s)")
    p.add_argument("--flow-interval", type=float, default=1.0,
                   help="seconds between flow (inbound per-source rate) samples (default: %(default)s)")
    p.add_argument("--flow-top", type=positive_int(0, 1000), default=5,
                   help="top talkers reported per flow sample (default: %(default)s)")
    p.add_argument("--flow-pps-threshold", type=float, default=1000.0,
                   help="also report every source above this many packets/s (default: %(default)s)")
    p.add_argument("--flow-watch-pps", type=float, default=100.0,
                   help="the XDP program reports a source from this many packets/s (per CPU); only "
                        "reported sources are read, so slower ones are not in flow events "
                        "(default: %(default)s; the lower of this and --flow-pps-threshold counts)")
    for kind, what in (("syn", "SYNs without ACK to one TCP port"), ("udp", "datagrams to one UDP port"),
                       ("icmp", "ICMP packets")):
        p.add_argument(f"--agg-{kind}-pps", type=float, default=AGG_PPS_DEFAULT[kind],
                       help=f"report {what}, all sources together, from this many per second as a "
                            "flow_aggregate event (0: never; default: %(default)s)")
    add_fleet_arguments(p)
    metrics.add_option(p)
    p.add_argument("--stack", action=argparse.BooleanOptionalAction, default=True,
                   help="count kernel packet drops per reason and place (docs/STACK.md; default: on)")
    p.add_argument("--stack-path", action=argparse.BooleanOptionalAction, default=False,
                   help="with --stack, also follow each received TCP/UDP packet through the stack's "
                        "hooks (per-flow path and latency; default: off: about 1.3 us more per "
                        "received packet, docs/STACK.md)")
    p.add_argument("--stack-interval", type=float, default=2.0,
                   help="seconds between drops events (default: %(default)s)")
    p.add_argument("--priority-boost", type=positive_int(0, 20), default=PRIORITY_BOOST,
                   help="run this many nice levels above normal, so a flood of local processes "
                        "does not starve event capture and bans (as auditd's priority_boost; "
                        "0: normal priority; default: %(default)s)")
    p.add_argument("--duration", type=float, help=argparse.SUPPRESS)  # tests, benchmarks
    p.add_argument("--ebpf", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--test-define", action="append", default=[], type=test_define,
                   help=argparse.SUPPRESS)   # tests: a changed program, to exercise replacement
    return p


def dump_ebpf(args) -> int:
    """Print the BPF sources and cflags that would load, then exit (no root)."""
    from ..kernel.enforcer import Enforcer
    from ..kernel.monitor import ConnectionMonitor
    mon = ConnectionMonitor(args.capture, warn=lambda m: print(f"// {m}"))   # a C comment in the dump
    for mode in ("kprobe", "tracepoint"):
        src, flags = mon.source_and_flags(mode)
        print(f"// ---- conn_monitor ({mode}) cflags: {' '.join(flags)}\n{src}")
    if not args.no_raw_sockets:
        print(f"// ---- outbound\n{(paths.BPF_DIR / 'outbound.bpf.c').read_text()}")
    if not args.no_xdp:
        src, flags = Enforcer(None, max_bans=args.max_bans,
                              extra_cflags=dict(args.test_define)).source_and_flags()
        print(f"// ---- enforce cflags: {' '.join(flags)}\n{src}")
    return 0


def serve_metrics(addr: tuple[str, int], loader) -> None:
    def families():
        bans, rules, enf = loader.bans, loader.rules, loader.enforcer
        return metrics.loader_families(
            loader.stats(), dict(loader.events.by_type), dict(bans.bans) if bans else {},
            list(rules.rules) if rules else [], enf.xdp_mode if enf else None,
            bool(enf and enf.cgroup_path), bans.rejected if bans else 0)
    metrics.serve_or_exit(PROG, addr, families)


@quiet_on_closed_stdout
def main(argv=None) -> int:
    starting.install()   # (again: main may be called without unified_ebpf.py)
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        fleet = fleet_options(args)
    except ValueError as e:
        parser.error(str(e))
    if args.ebpf:
        return dump_ebpf(args)
    if args.json and not args.unload:
        parser.error("--json goes with --unload")
    if args.no_xdp and args.ban:
        parser.error("--ban needs enforcement; drop --no-xdp")
    if args.buffer_pages & (args.buffer_pages - 1):
        parser.error("--buffer-pages must be a power of two")
    if not args.stack_interval > 0:
        parser.error("--stack-interval must be a positive number of seconds")
    if os.geteuid() != 0:
        die(PROG, "must run as root (try: sudo .venv/bin/python -u unified_ebpf.py)", EXIT_FAILURE)
    if args.unload:
        return unload(args)
    boost_priority(args.priority_boost)
    iface = None
    if not args.no_xdp:
        iface = args.interface or netinfo.default_route_interface()
        if not iface:
            parser.error("no default route to pick an interface from; pass -i IFACE")
        if not netinfo.interface_exists(iface):
            parser.error(f"no interface named {iface!r}; pass -i IFACE (see: ip link)")

    from ..store import StoreError
    from .options import LoaderOptions
    from .run import Loader
    opts = LoaderOptions(
        records=str(paths.records_dir(args.records)), config=str(paths.config_path(args.config)),
        interface=iface, enforce=not args.no_xdp, cgroup=not args.no_cgroup,
        xdp_mode=args.xdp_mode, capture=args.capture, bans=args.ban, max_bans=args.max_bans,
        page_cnt=args.buffer_pages, stats_interval=args.stats_interval,
        flow_interval=args.flow_interval, flow_top=args.flow_top,
        flow_pps_threshold=args.flow_pps_threshold, duration=args.duration, fleet=fleet,
        flow_watch_pps=args.flow_watch_pps,
        agg_pps={k: getattr(args, f"agg_{k}_pps") for k in AGG_PPS_DEFAULT},
        raw_sockets=not args.no_raw_sockets, pin_dir=args.pin_dir, extra_cflags=dict(args.test_define),
        stack=args.stack, stack_interval=args.stack_interval, stack_path=args.stack_path)
    try:
        loader = Loader(opts)
        if args.metrics_addr:
            serve_metrics(args.metrics_addr, loader)
        return loader.run()
    except StoreError as e:
        die(PROG, str(e), EXIT_FAILURE)


def boost_priority(levels: int) -> None:
    """Raise every thread of this process (only the main one exists yet;
    threads started later inherit it) `levels` nice levels above the one it
    was started with."""
    if not levels:
        return
    try:
        for tid in os.listdir("/proc/self/task"):
            now = os.getpriority(os.PRIO_PROCESS, int(tid))
            os.setpriority(os.PRIO_PROCESS, int(tid), max(-20, now - levels))
    except OSError as e:
        print(f"{PROG}: warning: runs at normal priority ({e.strerror}); a flood of local "
              "processes can delay events and bans", file=sys.stderr, flush=True)


def unload(args) -> int:
    """--unload: the one way enforcement comes down (see kernel/pins.py).
    `netsentinel unload` runs this as a process (ctl/ never imports the kernel)."""
    import json
    from ..kernel import KernelError
    from ..kernel.host import ensure_kernel_fs
    from ..kernel.pins import unload as unload_pins
    iface = args.interface or netinfo.default_route_interface()
    if not iface:
        die(PROG, "--unload needs -i IFACE (no default route to pick one from)", EXIT_USAGE)
    actions: list[str] = []

    def report(line: str) -> None:
        actions.append(line)
        if not args.json:
            print(f"unload: {line}", flush=True)
    ensure_kernel_fs()
    try:
        n = unload_pins(args.pin_dir, iface, report)
    except (KernelError, ValueError, OSError) as e:
        die(PROG, f"--unload {iface}: {e}", EXIT_FAILURE)
    if args.json:
        print(json.dumps({"interface": iface, "pin_dir": args.pin_dir, "removed": n,
                          "actions": actions}), flush=True)
    else:
        print(f"unload: {iface}: removed {n} pinned objects; nothing of NetSentinel's is enforced "
              "there now", flush=True)
    return 0


if __name__ == "__main__":   # `python -m netsentinel.loader.cli`: how `netsentinel unload` runs it
    raise SystemExit(main())
