"""How a scan names its actor (who, group_value) and its target
(sweep_target), and the count the LLM is shown (at_least)."""

from __future__ import annotations

import ipaddress

from ..addresses import canonical

_PID_FIELDS = ("pid", "ppid", "sid")   # numbers who() leaves out of what the LLM is shown


def group_value(ev: dict, field: str):
    """A scan grouping's value; exe falls back to the kernel's comm when
    /proc could not be read (a shell loop's probe is often gone by then)."""
    if field == "exe":
        return ev.get("exe") or f"comm:{ev.get('comm')}"
    return ev.get(field)


def who(fields: tuple, ev: dict, pids: bool = True) -> str:
    """The actor a scan group stands for, in words: the executable's
    processes of one user or a session, then this process, its parent and
    its session leader when /proc could be read. pids=False: the same by
    name only (what the LLM is shown: a pid would make every run of the
    same scan a new question to its answer cache)."""
    uid = ev.get("uid")
    if fields == ("uid", "comm"):
        base = f"{ev.get('comm')} processes of uid {uid}"
    elif fields == ("uid", "exe"):
        base = f"{ev.get('exe') or ev.get('comm')} processes of uid {uid}"
    elif fields == ("uid", "sid"):
        base = f"session {ev.get('sid')} of uid {uid}" if pids else f"one session of uid {uid}"
    else:
        base = ", ".join(f"{f} {group_value(ev, f)}" for f in fields
                         if pids or f not in _PID_FIELDS) or "one process"
    exe = ev.get("exe")
    this = [f"pid {ev.get('pid')}" + (f" {exe}" if exe else "")] if pids else [exe] if exe else []
    if ev.get("ppid") is not None:
        parent, leader = ev.get("parent_comm") or "?", ev.get("session_leader") or "?"
        this += [f"parent {parent} pid {ev['ppid']}", f"session {ev.get('sid')} led by {leader}"] if pids \
            else [f"parent {parent}", f"session led by {leader}"]
    return f"{base} ({', '.join(this)})" if this else base


def at_least(n: int, threshold: int) -> str:
    """A count past its threshold in doubling steps ("at least 40"): what
    the LLM is shown instead of the exact, growing count."""
    step = max(int(threshold), 1)
    while step * 2 <= n:
        step *= 2
    return f"at least {step}"


def sweep_target(daddr: str, hosts: tuple) -> str:
    """A host sweep inside one /24 (IPv4) or /64 (IPv6) is banned as that
    network; a wider one names the host that crossed the threshold."""
    if "." in daddr and ":" not in daddr:
        # Fast path for the common case (runs for every event of a sweep).
        prefix = daddr.rsplit(".", 1)[0]
        if all(isinstance(h, str) and h.rsplit(".", 1)[0] == prefix for h in hosts):
            return f"{prefix}.0/24"
        return daddr
    try:
        nets = {ipaddress.ip_network((ipaddress.ip_address(h), 64), strict=False)
                for h in (*hosts, daddr)}
    except (ValueError, TypeError):
        return daddr
    return canonical(nets.pop()) if len(nets) == 1 else daddr
