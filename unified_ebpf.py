#!/usr/bin/env python3
"""unified_ebpf.py - NetSentinel's kernel loader (run as root).

Watches outbound TCP connections, enforces bans (XDP ingress + cgroup
connect/sendmsg blocks), applies records/ban_commands.json and streams JSON
lines on stdout. Everything is in netsentinel/loader/; see --help.

USAGE: sudo .venv/bin/python -u unified_ebpf.py [-i IFACE] [--no-xdp] [--ban IP ...]
"""

import sys

from netsentinel.loader import starting

starting.install()   # first: a stop during the imports below is a clean stop

from netsentinel.loader.cli import main  # noqa: E402  (after the handlers, see above)

if __name__ == "__main__":
    sys.exit(main())
