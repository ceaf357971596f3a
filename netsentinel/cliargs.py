"""The error contract every NetSentinel command line keeps.

- A usage error (an unknown flag, a bad value or combination, a file,
  interface or host named on the command line that does not exist) is one
  line on stderr, "PROG: error: ... (see PROG --help)", exit status 2;
  nothing was done.
- A runtime failure (records/ or the whitelist cannot be read, written or
  is invalid; no root; a refused decision) is one line "PROG: error: ...",
  exit status 1.
- --version prints "PROG <netsentinel version>".
- A closed stdout (`PROG ... | head -1`) ends the tool quietly with status
  141, as SIGPIPE ends a shell tool: the reader wanted no more output.

argparse alone would print a usage block before its error; tool_parser()
and OneLineParser make it one line. docs/ARCHITECTURE.md documents this.
"""

from __future__ import annotations

import argparse
import functools
import os
import select
import signal
import sys
from typing import Callable, NoReturn

from . import __version__

EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_CLOSED_PIPE = 128 + signal.SIGPIPE

CONTRACT_EPILOG = """\
exit status:
  0    done
  1    runtime failure, e.g. records/ or the whitelist cannot be read,
       written or is invalid, no root, a refused decision
  2    usage error: a bad flag, value or combination, or a file, interface or
       host named on the command line that does not exist; nothing was done
  141  stdout closed early (| head)
errors are one line on stderr: "{prog}: error: ..."
"""


def die(prog: str, message: str, code: int) -> NoReturn:
    print(f"{prog}: error: {message}", file=sys.stderr)
    sys.exit(code)


def tool_name(prog: str) -> str:
    """The script a person typed: "user_whitelist.py" for a subcommand's
    "user_whitelist.py list", "dashboard.py" for "streamlit run dashboard.py --"."""
    words = prog.split()
    return next((w for w in words if w.endswith(".py")), words[0])


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line, exit code 2.
    add_subparsers makes its subcommand parsers of the same class."""

    def error(self, message: str) -> NoReturn:
        prog = tool_name(self.prog)
        die(prog, f"{message} (see {prog} --help)", EXIT_USAGE)


def tool_parser(prog: str, *, epilog: str = "", parser_class=OneLineParser,
                **kwargs) -> argparse.ArgumentParser:
    """A tool's top-level parser: one-line errors, --version, and the exit
    status contract at the end of --help."""
    name = tool_name(prog)
    contract = CONTRACT_EPILOG.format(prog=name)
    p = parser_class(prog=prog, epilog=f"{epilog.rstrip()}\n\n{contract}" if epilog else contract,
                     formatter_class=argparse.RawDescriptionHelpFormatter, **kwargs)
    p.add_argument("--version", action="version", version=f"{name} {__version__}")
    return p


def stdout_closed() -> bool:
    """True when nobody reads our stdout any more: a pipe whose reader left
    polls POLLERR. Tells a closed stdout from a BrokenPipeError raised by,
    say, a socket, which must not be silenced."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, ValueError, OSError):
        return False
    poller = select.poll()
    poller.register(fd, select.POLLOUT)
    return any(ev & (select.POLLERR | select.POLLHUP) for _, ev in poller.poll(0))


def quiet_on_closed_stdout(main: Callable[..., int | None]) -> Callable[..., int | None]:
    """Wrap a tool's main(): a reader that left (`| head -1`) ends the tool
    with EXIT_CLOSED_PIPE, not a traceback."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        try:
            try:
                return main(*args, **kwargs)
            finally:
                # Buffered output meets the closed pipe here, not in the
                # interpreter's own flush at exit (which prints "Exception ignored").
                sys.stdout.flush()
        except BrokenPipeError:
            if not stdout_closed():
                raise
            # The interpreter flushes stdout once more at exit: give it somewhere to go.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return EXIT_CLOSED_PIPE

    return wrapper
