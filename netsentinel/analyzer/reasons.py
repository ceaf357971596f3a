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


def template(reason: str) -> tuple[tuple, str, str, tuple]:
    """((text before, field name), ...), the text after the last field, and
    the reason as a format string of positional fields with its names."""
    parts, pos = [], 0
    for m in _FIELD.finditer(reason):
        parts.append((reason[pos:m.start()], m.group(1)))
        pos = m.end()
    rest = reason[pos:]

    def literal(text: str) -> str:
        return text.replace("{", "{{").replace("}", "}}")
    fmt = "".join(literal(text) + "{}" for text, _ in parts) + literal(rest)
    return tuple(parts), rest, fmt, tuple(name for _, name in parts)


def _event_value(ev: dict, name: str):
    """A field the event itself gives ("?" for one it cannot)."""
    if name in _EVENT_FIELDS:
        return ev.get(name)
    if name == "port_label":
        return f"port {ev.get('dport')}"
    if name == "socket":
        return f"{ev.get('family')}/{ev.get('sock_type')}, protocol {ev.get('protocol_name')}"
    return "?"


def render(tpl: tuple, ev: dict, fields: dict) -> str:
    """The reason for one verdict: fields (what the rule measured) over the
    event's own. (str.format of a value with no spec is its str().)"""
    _, rest, fmt, names = tpl
    if not names:
        return rest
    values = []
    get = fields.get
    for name in names:
        v = get(name, _NONE)
        if v is _NONE:   # the event's own field, looked up without a call for the common ones
            v = ev.get(name) if name in _EVENT_FIELDS else _event_value(ev, name)
        values.append(v)
    return fmt.format(*values)
