"""`python -m netsentinel.service`: the supervised pipeline (see cli.py)."""

import sys

from .cli import main

sys.exit(main())
