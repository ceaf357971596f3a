"""What the loader says and reconciles about the pinned enforcement it
adopts or leaves behind (netsentinel/kernel/pins.py holds the layout)."""

from __future__ import annotations

from typing import Callable

from ..addresses import canonical
from ..kernel.pins import LINK_PREFIX
from ..records import BANNED_IPS


def drop_unrecorded_bans(enforcer, recorded_bans: dict, file_ok: bool,
                         warn: Callable[[str], None]) -> None:
    """banned_ips.json is the record: bans a pinned map kept that it lacks go,
    but only when the file was there and a table; a missing, empty or broken
    file keeps them (enforcement fails closed)."""
    stray = [net for net in enforcer.banned() if canonical(net) not in recorded_bans]
    for net in stray if file_ok else ():
        enforcer.remove(net)
        warn(f"removed {canonical(net)} from the pinned ban map: not in {BANNED_IPS}")
    if stray and not file_ok:
        warn(f"kept {len(stray)} pinned bans that {BANNED_IPS} (missing or unreadable) does not "
             "list; an unban command removes each")


def report_attached(e, warn: Callable[[str], None]) -> None:
    if e.replaced:
        warn(f"program changed: replaced through the pinned links ({', '.join(e.replaced)}), "
             "without detaching")
    elif e.adopted:
        warn(f"adopted the enforcement pinned in {e.pins.path} ({len(e.adopted)} links)")
    if e.xdp_mode:
        path = e.ingress_report()["ingress_path"]
        warn(f"ingress filter on {e.interface} ({path}), pinned in {e.pins.path}")
    if e.cgroup_path:
        warn(f"connect/sendmsg blocks at cgroup2 root {e.cgroup_path}")


def enforcement_left(e, bans) -> str:
    """What protection stays after the loader exits, in words."""
    if e is None:
        return "nothing was enforced"
    links = [n for n in e.pins.pinned() if n.startswith(LINK_PREFIX)]
    if not links:
        return "no enforcement is attached"
    count = len(bans.bans) if bans else "the pinned"
    return (f"enforcement stays in place ({count} bans, {len(links)} pinned links in "
            f"{e.pins.path}); `{e.pins.unload_command()}` removes it")
