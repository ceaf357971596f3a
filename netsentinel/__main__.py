"""`python -m netsentinel`: the `netsentinel` command (netsentinel/ctl)."""

import sys

from .ctl.main import main

sys.exit(main())
