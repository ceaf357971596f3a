"""`python -m netsentinel.service` / `netsentinel-supervise`: the supervised
pipeline, as `make run` and netsentinel.service start it."""

from __future__ import annotations

import shlex
import sys

from .. import paths
from ..cliargs import EXIT_FAILURE, die, quiet_on_closed_stdout, tool_parser
from ..store import RecordsStore, StoreError
from .supervise import BUFFER_LINES, Supervisor

PROG = "netsentinel-supervise"

EPILOG = f"""examples:
  sudo {PROG} -i eth0
  sudo {PROG} -i eth0 --analyzer-args="--backend ollama --model qwen3:8b"
  sudo {PROG} --records /srv/netsentinel/records --loader-args="--flow-top 20"

The loader (unified_ebpf.py) and analyzer (llm_analyzer.py) are run with this
Python, from this checkout, with the same --records and --config. Stop with
Ctrl-C or SIGTERM: the loader detaches its programs, the analyzer drains.
The exit status is the loader's (so systemd restarts a failed pipeline);
2 when the analyzer refused its flags. docs/SERVICE.md has the details."""


def build_parser():
    p = tool_parser(PROG, description="Run unified_ebpf.py | llm_analyzer.py, restarting the "
                                      "analyzer when it exits while the loader keeps enforcing.",
                    epilog=EPILOG)
    p.add_argument("-i", "--interface", help="the loader's -i (default: the default-route interface)")
    p.add_argument("--records", metavar="DIR", help="records directory (both processes)")
    p.add_argument("--config", metavar="FILE", help="whitelist file (both processes)")
    p.add_argument("--loader-args", default="", metavar="ARGS",
                   help="more unified_ebpf.py flags, one shell-quoted string: --loader-args=\"--flow-top 20\"")
    p.add_argument("--analyzer-args", default="", metavar="ARGS",
                   help="more llm_analyzer.py flags, one shell-quoted string")
    p.add_argument("--netns", metavar="NAME",
                   help="run the loader inside this network namespace (ip netns exec; labs, demos)")
    p.add_argument("--buffer-lines", type=int, default=BUFFER_LINES, metavar="N",
                   help=f"loader lines kept while the analyzer is down (default {BUFFER_LINES})")
    return p


def commands(args) -> tuple[list[str], list[str]]:
    common = []
    if args.records:
        common += ["--records", args.records]
    if args.config:
        common += ["--config", args.config]
    try:
        loader_extra, analyzer_extra = shlex.split(args.loader_args), shlex.split(args.analyzer_args)
    except ValueError as e:
        die(PROG, f"cannot split --loader-args/--analyzer-args: {e} (see {PROG} --help)", 2)
    loader = [sys.executable, "-u", str(paths.PROJECT_ROOT / "unified_ebpf.py"), *common]
    if args.interface:
        loader += ["-i", args.interface]
    loader += loader_extra
    if args.netns:
        loader = ["ip", "netns", "exec", args.netns, *loader]
    analyzer = [sys.executable, "-u", str(paths.PROJECT_ROOT / "llm_analyzer.py"), *common,
                *analyzer_extra]
    return loader, analyzer


@quiet_on_closed_stdout
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.buffer_lines < 1:
        die(PROG, f"--buffer-lines must be at least 1, got {args.buffer_lines} (see {PROG} --help)", 2)
    loader, analyzer = commands(args)
    try:
        store = RecordsStore(paths.records_dir(args.records))
    except StoreError as e:
        die(PROG, str(e), EXIT_FAILURE)
    return Supervisor(loader, analyzer, store, buffer_lines=args.buffer_lines).run()
