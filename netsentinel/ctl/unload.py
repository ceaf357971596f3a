"""`netsentinel unload`: take NetSentinel's enforcement off an interface.

Enforcement is pinned in bpffs and outlives the loader (docs/ARCHITECTURE.md),
so stopping the loader leaves bans dropping; this is the explicit way down.
ctl/ never imports the kernel side, so this runs the loader's own `--unload`
(`unified_ebpf.py --unload`) as a process, with this interpreter and this
checkout's package, and reports what it removed. Refused while a loader runs
on that pin directory (the loader's lock says which pid)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from ..abi import check_pin_dir
from ..cliargs import EXIT_FAILURE, EXIT_USAGE
from .common import PROG, fail, print_json

LOADER_MODULE = "netsentinel.loader.cli"
# The loader's one-line errors start with its own name; ours say ours.
LOADER_ERROR_PREFIX = "unified_ebpf.py: error: "


def loader_command(args) -> list[str]:
    cmd = [sys.executable, "-m", LOADER_MODULE, "--unload", "--json"]
    if args.interface:
        cmd += ["-i", args.interface]
    if args.pin_dir:
        cmd += ["--pin-dir", args.pin_dir]
    return cmd


def _child_env() -> dict[str, str]:
    """The loader must be this checkout's: put its package first on the path."""
    here = str(Path(__file__).resolve().parent.parent.parent)
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": here + (os.pathsep + path if path else "")}


def cmd_unload(args) -> int:
    if args.pin_dir:
        try:
            check_pin_dir(os.path.abspath(args.pin_dir).rstrip("/") or "/")
        except ValueError as e:
            fail(f"{e} (see {PROG} unload --help)", EXIT_USAGE)
        args.pin_dir = os.path.abspath(args.pin_dir)
    if os.geteuid() != 0:
        fail(f"unload must run as root (try: sudo {PROG} unload"
             + (f" -i {args.interface}" if args.interface else "") + ")", EXIT_FAILURE)
    p = subprocess.run(loader_command(args), capture_output=True, text=True, env=_child_env())
    if p.returncode != 0:
        lines = p.stderr.strip().splitlines() or [f"the loader's --unload exited with {p.returncode}"]
        message = lines[-1].removeprefix(LOADER_ERROR_PREFIX)
        message = message.replace("(see unified_ebpf.py --help)", f"(see {PROG} unload --help)")
        fail(message, p.returncode if p.returncode in (EXIT_FAILURE, EXIT_USAGE) else EXIT_FAILURE)
    try:
        report = json.loads(p.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        fail(f"the loader's --unload printed no report (stdout: {p.stdout.strip()[:200]!r}); run "
             "unified_ebpf.py --unload -i IFACE to see what it did", EXIT_FAILURE)
    if args.json:
        print_json(report)
    else:
        for line in report["actions"]:
            print(f"unload: {line}")
        print(f"unload: {report['interface']}: removed {report['removed']} pinned objects; "
              "nothing of NetSentinel's is enforced there now")
    return 0


def register(sub) -> None:
    s = sub.add_parser("unload", help="remove the pinned enforcement (XDP/TCX and cgroup programs, "
                                      "ban and rule maps) from an interface")
    s.add_argument("-i", "--interface", metavar="IFACE",
                   help="interface to unload (default: the one holding the default route)")
    s.add_argument("--pin-dir", metavar="DIR",
                   help="bpffs directory the loader pinned into (default: the loader's, "
                        "/sys/fs/bpf/netsentinel)")
    s.add_argument("--json", action="store_true",
                   help="one JSON object: interface, pin_dir, removed (count), actions")
    s.set_defaults(run=cmd_unload)
