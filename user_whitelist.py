#!/usr/bin/env python3
"""user_whitelist.py - list and edit NetSentinel's whitelist (filter_config.json).

Everything is in netsentinel/whitelist_cli.py; see --help.

USAGE: python3 user_whitelist.py [--config FILE] {list,add,remove,check} ...
"""

import sys

from netsentinel.whitelist_cli import main

if __name__ == "__main__":
    sys.exit(main())
