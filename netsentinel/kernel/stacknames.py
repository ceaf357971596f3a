"""Names for what the stack program counts: drop reasons as the kernel
spells them (from the kfree_skb tracepoint's format file) and drop
locations (from /proc/kallsyms)."""

from __future__ import annotations

import bisect
import re

_SYMBOLIC = re.compile(r"__print_symbolic\(REC->reason,(.*)\)\s*$", re.S)
_PAIR = re.compile(r"\{\s*(\d+)\s*,\s*\"([A-Z0-9_]+)\"\s*\}")


def drop_reason_names(format_text: str) -> dict[int, str]:
    """{value: NAME} from a kfree_skb format file; {} if it has no reasons."""
    m = _SYMBOLIC.search(format_text)
    return {int(v): name for v, name in _PAIR.findall(m.group(1))} if m else {}


class Symbols:
    """Kernel text addresses -> "function+0xoff" from /proc/kallsyms (read as
    root; an unprivileged read shows zeros, and then addresses stay hex)."""

    def __init__(self, path: str = "/proc/kallsyms"):
        pairs = []
        try:
            with open(path) as f:
                for line in f:
                    parts = line.split()
                    if len(parts) >= 3 and parts[1] in "tTwW":
                        addr = int(parts[0], 16)
                        if addr:
                            pairs.append((addr, parts[2]))
        except OSError:
            pass
        pairs.sort()
        self._addrs = [a for a, _ in pairs]
        self._names = [n for _, n in pairs]
        self._cache: dict[int, str] = {}

    def name(self, addr: int) -> str:
        if addr in self._cache:
            return self._cache[addr]
        i = bisect.bisect_right(self._addrs, addr) - 1
        text = f"{self._names[i]}+{addr - self._addrs[i]:#x}" if i >= 0 else f"{addr:#x}"
        self._cache[addr] = text
        return text
