"""The loader's enforcement start (loader/run.py's order, see its top): the
maps, the saved bans, rules and containment into them, queued commands,
and only then the programs attached."""

from __future__ import annotations

from . import cmdfan
from .bantable import BanTable
from .contain import ContainTable
from .flows import FlowFeed
from .pinned import drop_unrecorded_bans, report_attached
from .protect import ProtectedFeed
from .ruletable import RuleTable
from ..records import BANNED_IPS


def start_enforcement(loader, warn) -> None:
    """Maps, saved state into the maps, then programs (see the top); warn:
    the loader's one-line messages."""
    o, e = loader.opts, loader.enforcer
    e.load()
    loader.bans = BanTable(loader.store, e, loader.whitelist, loader.emit_outcome, warn)
    # The protected set refreshed by a thread, not inside a ban (loader/protect.py).
    loader.protected = ProtectedFeed(loader.bans.protected_cache,
                                     lambda: loader._wl.config["protect_ssh_ports"], warn)
    loader.protected.start()
    loader.rules = RuleTable(
        loader.store, e, loader.bans.protected,
        lambda: loader.whitelist.current().config["protect_ssh_ports"], loader.emit_outcome, warn)
    # Read before restore() may set a broken file aside (see drop_unrecorded_bans).
    # records/ trouble (a held lock, a full disk) is retried, never fatal.
    recorded = isinstance(loader.until_done(
        lambda: loader.store.read(BANNED_IPS, on_corrupt="default")), dict)
    loader.restored = (loader.until_done(loader.bans.restore), loader.until_done(loader.rules.restore))
    for ip in o.bans:
        loader.until_done(lambda ip=ip: loader.bans.ban_now(
            {"action": "ban", "ip": ip, "reason": "--ban at startup", "source": "cli"}))
    # Commands still queued (a crash between applying one and saving it)
    # go in now, so a ban the pinned map holds is never dropped and re-added.
    loader.until_done(loader.bans.process_commands)
    loader.until_done(loader.rules.process_commands)
    if e.want_cgroup:   # containment lives in the cgroup hooks; restore() applies its queue too
        loader.contain = ContainTable(loader.store, e, loader.emit_outcome, warn)
        loader.until_done(loader.contain.restore)
    else:
        warn("--no-cgroup: process containment is off; contain commands stay queued")
    drop_unrecorded_bans(e, loader.bans.bans, recorded, warn)
    warn("command files: one writer at a time (fanotify); nothing written with > is lost"
         if cmdfan.status(loader.store.root) else f"command files: {cmdfan.unavailable}; writes "
         "replaced by a later > before the loader read them are counted and reported")
    e.attach()
    report_attached(e, warn)
    if e.xdp_mode:
        loader.flows = FlowFeed(e, loader.events.emit, interval=o.flow_interval, top_n=o.flow_top,
                                pps_threshold=o.flow_pps_threshold, watch_pps=o.flow_watch_pps,
                                agg_pps=o.agg_pps)
