"""The flow classifier at run time: a decision tree read from JSON.

ml/train_flow_model.py trains it with scikit-learn on lab-generated flow
events and exports the tree as plain JSON (netsentinel/analyzer/models/flow_tree.json);
here it is walked in pure Python. No pickle is ever loaded, so a model file
cannot run code, and the analyzer does not need scikit-learn.
"""

from __future__ import annotations

import json
from pathlib import Path

MODEL_PATH = Path(__file__).resolve().parent / "models" / "flow_tree.json"

FEATURES = ("pps", "pkt_size_mean", "tcp_frac", "udp_frac", "icmp_frac", "syn_frac", "ack_frac",
            "echo_frac", "ssdp_frac", "reflect_frac", "dport_buckets")


def features(ev: dict) -> list[float]:
    """The feature vector of one `flow` event (rates and fractions of the window)."""
    n = max(ev.get("packets", 0), 1)
    return [
        float(ev.get("pps", 0.0)),
        float(ev.get("pkt_size_mean", 0.0)),
        ev.get("tcp", 0) / n,
        ev.get("udp", 0) / n,
        ev.get("icmp", 0) / n,
        ev.get("tcp_syn", 0) / n,
        ev.get("tcp_ack", 0) / n,
        ev.get("icmp_echo", 0) / n,
        ev.get("udp_ssdp", 0) / n,
        ev.get("udp_reflect", 0) / n,
        float(ev.get("dport_buckets", 0)),
    ]


class FlowModel:
    def __init__(self, doc: dict):
        if doc.get("features") != list(FEATURES):
            raise ValueError("model features do not match this version of netsentinel/analyzer/flowmodel.py")
        t = doc["tree"]
        self.classes = doc["classes"]
        self.feature, self.threshold = t["feature"], t["threshold"]
        self.left, self.right, self.value = t["left"], t["right"], t["value"]
        n = len(self.feature)
        if not all(len(x) == n for x in (self.threshold, self.left, self.right, self.value)):
            raise ValueError("malformed tree: arrays of different lengths")
        self.meta = {k: v for k, v in doc.items() if k != "tree"}

    @classmethod
    def load(cls, path: str | Path = MODEL_PATH) -> "FlowModel":
        return cls(json.loads(Path(path).read_text()))

    def predict(self, ev: dict) -> tuple[str, float]:
        """(label, confidence): the leaf's majority class and its share."""
        x = features(ev)
        node, steps = 0, 0
        while self.left[node] != -1:
            node = self.left[node] if x[self.feature[node]] <= self.threshold[node] else self.right[node]
            steps += 1
            if steps > len(self.left):
                raise ValueError("malformed tree: a cycle")
        counts = self.value[node]
        best = max(range(len(counts)), key=counts.__getitem__)
        total = sum(counts) or 1.0
        return self.classes[best], round(counts[best] / total, 3)
