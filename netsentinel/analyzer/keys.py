"""The keys open threats are merged by (a threat's dedupe_key): one attack,
one decision for a person. Every judge names its threats through these."""

from __future__ import annotations


def process_key(ev: dict) -> str:
    """Open threats are merged per process identity (uid and comm, which
    the kernel always gives: a shell loop's probes read from /proc and those
    already gone are one actor) and event kind: the suspicious port a
    scanner touched first, its scan and its sweep are one attack, one
    decision for a person, listing its destinations (threats.py keeps each
    sighting's evidence together). Another program hitting the same host is
    another actor, never folded into this one."""
    return f"proc|{ev.get('type', 'connection')}|uid={ev.get('uid')}|comm={ev.get('comm')}"


def executable_key(ev: dict, kind: str | None = None) -> str:
    """A process's threats of one kind (the event's type unless given) by
    uid and executable (comm when /proc could not name it): raw sockets and
    UDP, where one program's sockets and runs are one actor."""
    who = ev.get("exe") or f"comm:{ev.get('comm')}"
    return f"proc|{kind or ev.get('type')}|uid={ev.get('uid')}|{who}"


def destination_key(daddr: str) -> str:
    """The key of a threat about a destination and no process (a writer
    that names none)."""
    return f"dst|{daddr}"
