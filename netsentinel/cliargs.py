"""argparse for the entry points, with errors as one line on stderr.

argparse prints a usage block before its error; the house rule is one line
("PROG: error: ...") and exit code 2 for bad input, whatever the tool.
"""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn

EXIT_BAD_INPUT = 2


def die(prog: str, message: str, code: int) -> NoReturn:
    print(f"{prog}: error: {message}", file=sys.stderr)
    sys.exit(code)


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line, exit code 2.
    Pass parser_class=OneLineParser to add_subparsers so subcommands agree."""

    def error(self, message: str) -> NoReturn:
        prog = self.prog.split()[0]  # a subcommand's prog is "tool.py sub"
        die(prog, f"{message} (see {prog} --help)", EXIT_BAD_INPUT)
