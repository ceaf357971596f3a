"""What a person can do to a pending threat from the Review page, one
function per action in ACTIONS (a new action is one more entry): contain
the threat's process, approve (ban), reject. Each runs for one threat id
and returns its one-line result, or raises a NetSentinelError (one line)
when refused.

Run as root (DASHBOARD_USER=root) the dashboard writes records/ itself;
unprivileged (the default) it asks root's analyzer, which applies the same
checks (netsentinel/analyzer/dashcmds.py) and writes the audit entry."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from .. import threats
from .context import Ctx
from .ui import analyzer_hint, loader_hint


@dataclass(frozen=True)
class Options:
    """The choices that go with a decision (the form's fields)."""
    ttl_seconds: int | None = None  # None: permanent (confirmed by the form)
    note: str | None = None
    trust: bool = False  # on reject, whitelist the target too
    stop: str | None = None  # on contain, also stop the process: "TERM" or "KILL" (the form confirms)
    by_exe: bool = True  # on contain, every run of its executable, not only this process


@dataclass(frozen=True)
class Action:
    label: str                                   # the button's
    run: Callable[[Ctx, str, Options], str]
    refused: str = "Refused: {}"                 # a refused ban's wording
    bulk: bool = True                            # offered for the table's selection too
    offered: Callable[[dict], bool] = lambda t: True   # on this threat's card?


def contain(ctx: Ctx, tid: str, opt: Options) -> str:
    """Approve by containing: a contain command for the threat's process."""
    if ctx.queued:  # unprivileged: root's analyzer decides it and queues the command
        applied = ctx.ask("contain", threat=tid, ttl_seconds=opt.ttl_seconds, note=opt.note,
                          stop=opt.stop, by_exe=opt.by_exe)
        return f"Contain {tid}: {analyzer_hint(ctx, applied)}; the loader then contains it."
    t = threats.contain(ctx.store, tid, by="dashboard", note=opt.note, ttl_seconds=opt.ttl_seconds,
                        stop=opt.stop, by_exe=opt.by_exe)
    cmd = t["contain_command"]
    what = f"pid {cmd['pid']}" + (" and its executable" if cmd.get("by_exe") else "")
    return f"Approved: containment of {what} queued; {loader_hint(ctx)}"


def approve(ctx: Ctx, tid: str, opt: Options) -> str:
    if ctx.queued:
        applied = ctx.ask("approve", threat=tid, ttl_seconds=opt.ttl_seconds, note=opt.note or None)
        return f"Approved {tid}: {analyzer_hint(ctx, applied)}; the loader then bans it."
    wl = ctx.whitelist_for_write()
    t = threats.approve(ctx.store, tid, by="dashboard", note=opt.note or None,
                        ttl_seconds=opt.ttl_seconds, whitelist=wl, protected=ctx.protected(wl))
    return f"Approved: ban of {t['ban_command']['ip']} queued; {loader_hint(ctx)}"


def reject(ctx: Ctx, tid: str, opt: Options) -> str:
    if ctx.queued:
        applied = ctx.ask("reject", threat=tid, trust=bool(opt.trust), note=opt.note or None)
        return f"Rejected {tid}{' (and trusted its target)' if opt.trust else ''}: " \
               f"{analyzer_hint(ctx, applied)}."
    t = threats.reject(ctx.store, tid, by="dashboard", note=opt.note or None,
                       whitelist_file=ctx.whitelist_file if opt.trust else None)
    extra = f"; {t['whitelisted']} is now trusted" if t.get("whitelisted") else ""
    return f"Rejected threat against {threats.target_of(t) or '?'}{extra}."


# In the order of the buttons. Containing is for a threat whose actor is a
# local process, one card at a time (its form has the stop choices).
ACTIONS: dict[str, Action] = {
    "contain": Action("Contain process", contain, bulk=False,
                      offered=lambda t: threats.local_actor(t) is not None),
    "approve": Action("Approve (ban)", approve,
                      "Ban refused: {}. The threat stays pending: reject it, or ban by hand."),
    "reject": Action("Reject", reject),
}


def audit_details(name: str, tid: str, opt: Options) -> dict:
    if name == "approve":
        return {"threat": tid, "ttl_seconds": opt.ttl_seconds}
    if name == "reject":
        return {"threat": tid, "trust_destination": bool(opt.trust)}
    if name == "contain":
        return {"threat": tid, "ttl_seconds": opt.ttl_seconds, "stop": opt.stop, "by_exe": opt.by_exe}
    return {"threat": tid}
