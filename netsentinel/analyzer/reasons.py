"""A rule's reason text with {fields}: cut at its fields once, when the
rules are read, and filled per verdict by joining the pieces (a regex
substitution per verdict cost more than the rest of the verdict)."""

from __future__ import annotations

import re

_FIELD = re.compile(r"\{([^{}]*)\}")
TEMPLATE_FIELDS = {"comm", "exe", "daddr", "dport", "port_label", "why", "distinct", "window",
                   "sample", "entry", "threshold", "host", "who", "signal", "socket", "pid"}
_EVENT_FIELDS = frozenset(("comm", "exe", "daddr", "dport", "pid"))
_NONE = object()   # no such field (a field may hold None)


def template(reason: str) -> tuple[tuple, str]:
    """((text before, field name), ...) and the text after the last field."""
    parts, pos = [], 0
    for m in _FIELD.finditer(reason):
        parts.append((reason[pos:m.start()], m.group(1)))
        pos = m.end()
    return tuple(parts), reason[pos:]


def _event_value(ev: dict, name: str):
    """A field the event itself gives ("?" for one it cannot)."""
    if name in _EVENT_FIELDS:
        return ev.get(name)
    if name == "port_label":
        return f"port {ev.get('dport')}"
    if name == "socket":
        return f"{ev.get('family')}/{ev.get('sock_type')}, protocol {ev.get('protocol_name')}"
    return "?"


def render(tpl: tuple[tuple, str], ev: dict, fields: dict) -> str:
    """The reason for one verdict: fields (what the rule measured) over the event's own."""
    parts, rest = tpl
    if not parts:
        return rest
    out = []
    for text, name in parts:
        v = fields.get(name, _NONE)
        if v is _NONE:   # the event's own field, looked up without a call for the common ones
            v = ev.get(name) if name in _EVENT_FIELDS else _event_value(ev, name)
        out += (text, str(v))
    out.append(rest)
    return "".join(out)
