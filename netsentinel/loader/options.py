"""What unified_ebpf.py's flags make of a loader run (loader/cli.py builds it)."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..abi import MAX_BANS
from ..kernel.pins import DEFAULT_PIN_ROOT
from .crowdsec import FleetOptions
from .flows import AGG_PPS_DEFAULT


@dataclass
class LoaderOptions:
    records: str
    config: str
    interface: str | None
    enforce: bool = True
    cgroup: bool = True
    xdp_mode: str = "auto"
    capture: str = "auto"
    bans: list[str] = field(default_factory=list)
    max_bans: int = MAX_BANS
    pin_dir: str = DEFAULT_PIN_ROOT
    extra_cflags: dict[str, int] = field(default_factory=dict)   # tests: simulate an upgrade
    page_cnt: int = 64
    stats_interval: float = 10.0
    flow_interval: float = 1.0
    flow_top: int = 5
    flow_pps_threshold: float = 1000.0
    flow_watch_pps: float = 100.0        # the XDP program reports a source from this rate
    agg_pps: dict[str, float] = field(default_factory=lambda: dict(AGG_PPS_DEFAULT))
    duration: float | None = None
    fleet: FleetOptions | None = None   # CrowdSec LAPI (docs/FLEET.md)
    raw_sockets: bool = True  # outbound (issue 12)
    stack: bool = True                  # drop reasons (docs/STACK.md)
    stack_interval: float = 2.0
    stack_path: bool = True             # the per-flow path (docs/STACK.md)
