"""Where things live: the checkout's own records/ and filter_config.json,
overridable per process (--records / NETSENTINEL_RECORDS, --config /
NETSENTINEL_CONFIG) so a copy of the checkout, or a test, has its own."""

from __future__ import annotations

import os
from pathlib import Path

# The folder that holds the entry-point scripts (the checkout root).
PROJECT_ROOT = Path(__file__).resolve().parent.parent
BPF_DIR = PROJECT_ROOT / "bpf"


def records_dir(cli_value: str | None = None) -> Path:
    """--records beats NETSENTINEL_RECORDS beats <checkout>/records."""
    value = cli_value or os.environ.get("NETSENTINEL_RECORDS")
    return Path(value).expanduser().absolute() if value else PROJECT_ROOT / "records"


def config_path(cli_value: str | None = None) -> Path:
    """--config beats NETSENTINEL_CONFIG beats <checkout>/filter_config.json."""
    value = cli_value or os.environ.get("NETSENTINEL_CONFIG")
    return Path(value).expanduser().absolute() if value else PROJECT_ROOT / "filter_config.json"
