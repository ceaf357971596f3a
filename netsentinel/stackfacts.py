"""What the stack saw of one process or host, for the investigation views
(dashboard History, `netsentinel events --investigate`): its TCP health rows,
the drops of its packets and its flows' paths, taken from records/stack.json
(written by the loader with --stack; docs/STACK.md). That file holds what
the running loader saw since it started, bounded (the most recent
connections, the biggest drop flows and paths), so these facts are too:
`since` says from when.
"""

from __future__ import annotations

import os

SHOWN = 20   # rows of each kind in a summary


# Field -> the types a row must have there to be used (rows()).
_TYPES = {"saddr": str, "daddr": str, "src": str, "dst": str, "reason": str, "sport": int, "local": str, "port": int,
          "drops": int,
          "count": int, "edges": list, "dport": (int, type(None))}


def rows(value, fields: tuple[str, ...]) -> list[dict]:
    """The rows of one of stack.json's lists that have every field named,
    of its type (_TYPES); anything else is left out (the file is the
    loader's, but a damaged one must not break a page or the command)."""
    if not isinstance(value, list):
        return []
    return [r for r in value if isinstance(r, dict)
            and all(f in r and isinstance(r[f], _TYPES.get(f, object)) for f in fields)]


def _is_process(c: dict, process: str | None, exe: str | None, uid: int | None) -> bool:
    """The event store's meaning: process = comm, exe base name or exe path."""
    path = c.get("exe") or ""
    if process and process not in (c.get("comm"), path, os.path.basename(path)):
        return False
    if exe and exe != path:
        return False
    return uid is None or c.get("uid") == uid


def _ends(c: dict) -> tuple:
    return (c["saddr"], c["sport"], c["daddr"], c["dport"])


def stack_facts(doc: dict, *, process: str | None = None, exe: str | None = None,
                uid: int | None = None, addr: str | None = None) -> dict | None:
    """{"since", "connections", "drops", "paths", "full_queues"} for what is followed, or
    None when stack.json has nothing to say (no file, or nothing followed)."""
    if not isinstance(doc, dict) or not doc or not (process or exe or addr or uid is not None):
        return None
    conns = rows(doc.get("connections"), ("saddr", "sport", "daddr", "dport"))
    drops = rows(doc.get("drop_flows"), ("src", "dst", "dport", "reason", "count"))
    paths = rows(doc.get("paths"), ("src", "sport", "dst", "dport", "edges"))
    queues = rows(doc.get("full_queues"), ("local", "port", "drops"))
    if process or exe or uid is not None:
        queues = [q for q in queues if _is_process(q, process, exe, uid) and (not addr or addr == q["local"])]
        mine = [c for c in conns if _is_process(c, process, exe, uid)
                and (not addr or addr in (c["saddr"], c["daddr"]))]
        ends = {_ends(c) for c in mine}
        # A drop of its packets: towards its local port from the peer, or from it towards the peer's port.
        near = {(c["daddr"], c["saddr"], c["sport"]) for c in mine} | {(c["saddr"], c["daddr"], c["dport"])
                                                                       for c in mine}
        drops = [d for d in drops if (d["src"], d["dst"], d["dport"]) in near]
        paths = [p for p in paths if (p["dst"], p["dport"], p["src"], p["sport"]) in ends
                 or (p["src"], p["sport"], p["dst"], p["dport"]) in ends]
    else:
        mine = [c for c in conns if addr in (c["saddr"], c["daddr"])]
        drops = [d for d in drops if addr in (d["src"], d["dst"])]
        paths = [p for p in paths if addr in (p["src"], p["dst"])]
        queues = [q for q in queues if addr in (q["local"], q.get("last_src"))]
    mine.sort(key=lambda c: str(c.get("last_seen")), reverse=True)
    # The loader's own network namespace's first: the host's connections
    # before its containers' (a busy one would push them out of the summary).
    own = doc.get("netns")
    if isinstance(own, int):
        mine.sort(key=lambda c: c.get("netns") != own)
    drops.sort(key=lambda d: -d["count"])
    return {"since": doc.get("started_at"), "updated_at": doc.get("updated_at"),
            "connections": mine[:SHOWN], "drops": drops[:SHOWN], "paths": paths[:SHOWN],
            "full_queues": sorted(queues, key=lambda q: -q["drops"])[:SHOWN]}


def connection_line(c: dict) -> str:
    """One TCP health row in words, for a terminal."""
    who = f"{c.get('comm')}[{c.get('pid')}]" if c.get("pid") else "(no process)"
    return (f"{c.get('direction', '?')} {c['saddr']}:{c['sport']} -> {c['daddr']}:{c['dport']} {who} "
            f"{c.get('state')} srtt {c.get('srtt_ms')} ms, {c.get('retransmits')} retransmits, "
            f"resets {c.get('rst_sent')} sent/{c.get('rst_recv')} received")


def drop_line(d: dict) -> str:
    return f"{d['count']} x {d['reason']} {d['src']} -> {d['dst']}:{d['dport'] if d['dport'] is not None else '-'}"
