"""Address text to ipaddress objects, remembered: the analyzer sees the
same few hundred destinations over and over, and parsing one costs more
than judging the rest of its event (ipaddress is pure Python)."""

from __future__ import annotations

import ipaddress

MAX_CACHED = 65536   # distinct texts remembered; then the cache starts afresh (bounded memory)
MAX_TEXT = 64        # longer texts are parsed each time (the longest IPv6 text is 45)

# Text -> address (None: not one); read directly by hot paths, so only
# ever cleared, never replaced.
KNOWN_IPS: dict = {}


def parse_ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """ipaddress.ip_address(text), or None when text is not an address."""
    try:
        return KNOWN_IPS[text]
    except KeyError:
        pass
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        ip = None
    if len(text) > MAX_TEXT:
        return ip   # never an address anyone uses: not worth remembering (memory stays bounded)
    if len(KNOWN_IPS) >= MAX_CACHED:
        # A stream of distinct (hostile or random) addresses: forget all at
        # once rather than keep an LRU order per lookup on the hot path.
        KNOWN_IPS.clear()
    KNOWN_IPS[text] = ip
    return ip
