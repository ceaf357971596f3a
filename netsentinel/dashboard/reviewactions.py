"""What a person can do to a pending threat from the Review page, one
function per action in ACTIONS (a new action, e.g. containing a process, is
one more entry). Each runs for one threat id and returns its one-line
result, or raises a NetSentinelError (one line) when refused.

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


# name -> (button label, function, refusal wording)
ACTIONS: dict[str, tuple[str, Callable[[Ctx, str, Options], str], str]] = {
    "approve": ("Approve (ban)", approve,
                "Ban refused: {}. The threat stays pending: reject it, or ban by hand."),
    "reject": ("Reject", reject, "Refused: {}"),
}


def audit_details(name: str, tid: str, opt: Options) -> dict:
    if name == "approve":
        return {"threat": tid, "ttl_seconds": opt.ttl_seconds}
    if name == "reject":
        return {"threat": tid, "trust_destination": bool(opt.trust)}
    return {"threat": tid}
