"""The path received packets take through the stack, per flow (issue 17,
docs/STACK.md "The path"): the kernel counts each flow's edges between hooks
(bpf/stack_path.bpf.c) with a log2 latency histogram; each interval this
drains them into a bounded per-flow total that records/stack.json carries
for the Stack page's path diagram.
"""

from __future__ import annotations

from typing import Callable

from ..kernel.stack import HOOKS
from ..timefmt import utc_now_iso

MAX_FLOWS = 400     # flows remembered (least recently seen forgotten first)
SHOWN_FLOWS = 100   # flows written to stack.json, the most packets first


def node(hook: int, reason: str | None) -> str:
    """A diagram node: the hook's name; a drop names its reason."""
    name = HOOKS[hook] if 0 <= hook < len(HOOKS) else f"hook{hook}"
    return f"dropped {reason}" if name == "dropped" and reason else name


def median_us(hist: list[int]) -> float | None:
    """The median latency from a log2 histogram, as the middle of the bucket
    it falls in (bucket b holds [2^(b-1), 2^b) ns, BCC's bpf_log2l): within
    a factor of 1.5 of the true value, which is what a path diagram needs."""
    total = sum(hist)
    if total == 0:
        return None
    seen = 0
    for b, n in enumerate(hist):
        seen += n
        if seen * 2 >= total:
            return round((1.5 * 2 ** (b - 1) if b else 0.5) / 1000, 3)
    return None


class Paths:
    def __init__(self, read: Callable[[], list[dict]]):
        self.read = read
        # flow key -> {"flow": {...}, "edges": {(from, to): {...}}, "last_seen": iso}
        self.flows: dict[tuple, dict] = {}
        self.totals = {"path_edges": 0}

    def sample(self) -> None:
        now = utc_now_iso()
        for r in self.read():
            fk = (r["family"], r["proto"], r["src"], r["sport"], r["dst"], r["dport"], r["netns"])
            f = self.flows.pop(fk, None) or {
                "flow": {k: r[k] for k in ("family", "proto", "src", "sport", "dst", "dport", "netns")},
                "edges": {}}
            self.flows[fk] = f        # re-inserted: the dict is ordered by last sight
            f["last_seen"] = now
            ek = (node(r["from"], None), node(r["to"], r["reason"]))
            e = f["edges"].setdefault(ek, {"count": 0, "sum_ns": 0, "hist": [0] * len(r["hist"])})
            e["count"] += r["count"]
            e["sum_ns"] += r["sum_ns"]
            e["hist"] = [a + b for a, b in zip(e["hist"], r["hist"])]
            self.totals["path_edges"] += 1
        while len(self.flows) > MAX_FLOWS:
            self.flows.pop(next(iter(self.flows)))

    def snapshot(self) -> list[dict]:
        """The flows for stack.json: each with its packets (those seen at
        their first hook), its nodes' counts and its edges with median and
        mean latency (edges from `start` carry no latency)."""
        out = []
        for f in self.flows.values():
            edges, nodes = [], {}
            for (a, b), e in f["edges"].items():
                timed = a != "start"
                edges.append({"from": a, "to": b, "count": e["count"],
                              "median_us": median_us(e["hist"]) if timed else None,
                              "mean_us": round(e["sum_ns"] / e["count"] / 1000, 3) if timed else None})
                nodes[b] = nodes.get(b, 0) + e["count"]
            packets = sum(e["count"] for e in edges if e["from"] == "start")
            out.append({**f["flow"], "packets": packets, "last_seen": f["last_seen"],
                        "nodes": nodes, "edges": sorted(edges, key=lambda e: -e["count"])})
        out.sort(key=lambda p: -p["packets"])
        return out[:SHOWN_FLOWS]
