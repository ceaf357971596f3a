"""The stack's per-flow paths in the loader (netsentinel/loader/path.py) and
the investigation facts (netsentinel/stackfacts.py), without a kernel: the
median from a log2 histogram, edges summed across intervals, the flow
table's bound, and what stack.json holds of a process or an address (on
tests/samples/stack.json, captured from the lab)."""

from __future__ import annotations

import json
from pathlib import Path

from netsentinel.loader import path as pathmod
from netsentinel.loader.path import Paths, median_us, node
from netsentinel.stackfacts import stack_facts

SAMPLE = Path(__file__).resolve().parent / "samples" / "stack.json"


def edge(sport: int, frm: int, to: int, count: int, hist: list[int], reason=None, sum_ns=0) -> dict:
    return {"family": "ipv4", "proto": 6, "src": "10.0.0.2", "sport": sport, "dst": "10.0.0.1", "dport": 80,
            "netns": 1, "from": frm, "to": to, "reason": reason, "count": count, "sum_ns": sum_ns, "hist": hist}


def test_the_median_is_the_middle_of_its_log2_bucket():
    # bucket b holds [2^(b-1), 2^b) ns: 3 of 4 latencies in [2, 4) ns
    assert median_us([0, 0, 3, 1]) == 0.003
    assert median_us([0] * 11 + [1, 1, 1]) == round(1.5 * 2 ** 11 / 1000, 3)   # [2048, 4096) ns
    assert median_us([0] * 32) is None
    assert node(5, "NO_SOCKET") == "dropped NO_SOCKET" and node(2, None) == "tcp"


def test_edges_add_up_across_intervals_and_nodes_count_arrivals():
    batches = [[edge(1, 0, 1, 3, [0] * 32), edge(1, 1, 2, 2, [0, 0, 2] + [0] * 29, sum_ns=6)],
               [edge(1, 0, 1, 1, [0] * 32), edge(1, 1, 2, 1, [0, 0, 1] + [0] * 29, sum_ns=3),
                edge(1, 1, 5, 1, [0, 1] + [0] * 30, reason="NO_SOCKET", sum_ns=1)]]
    p = Paths(lambda: batches.pop(0))
    p.sample()
    p.sample()
    (flow,) = p.snapshot()
    assert flow["packets"] == 4
    assert flow["nodes"] == {"receive": 4, "tcp": 3, "dropped NO_SOCKET": 1}
    edges = {(e["from"], e["to"]): e for e in flow["edges"]}
    assert edges["receive", "tcp"] == {"from": "receive", "to": "tcp", "count": 3, "median_us": 0.003,
                                       "mean_us": 0.003}
    assert edges["start", "receive"]["median_us"] is None


def test_the_flow_table_is_bounded_least_recently_seen_first(monkeypatch):
    monkeypatch.setattr(pathmod, "MAX_FLOWS", 3)
    batches = [[edge(port, 0, 1, 1, [0] * 32)] for port in (1, 2, 3, 1, 4)]
    p = Paths(lambda: batches.pop(0))
    for _ in range(5):
        p.sample()
    assert sorted(f["sport"] for f in p.snapshot()) == [1, 3, 4]   # 2 was the least recently seen


def test_facts_of_an_address_and_of_a_process_from_the_lab_sample():
    doc = json.loads(SAMPLE.read_text())
    scan = next(d for d in doc["drop_flows"] if d["dport"] == 7)
    peer, dut = scan["src"], scan["dst"]
    host = stack_facts(doc, addr=peer)
    assert host["since"] == doc["started_at"]
    assert host["connections"] and all(peer in (c["saddr"], c["daddr"]) for c in host["connections"])
    assert scan in host["drops"] and all(peer in (d["src"], d["dst"]) for d in host["drops"])
    assert host["paths"] and all(peer in (p["src"], p["dst"]) for p in host["paths"])
    accepted = next(c for c in doc["connections"] if c["direction"] == "inbound" and c["pid"])
    proc = stack_facts(doc, process="python3")
    assert accepted in proc["connections"]
    assert all(c["comm"] == "python3" for c in proc["connections"])
    # Its drops are those of its connections' packets (a segment after the
    # close, towards the listener's port), not the host's closed-port scan.
    assert scan not in proc["drops"]
    assert (accepted["daddr"], accepted["saddr"], accepted["sport"]) in {
        (d["src"], d["dst"], d["dport"]) for d in proc["drops"]}
    ends = {(c["saddr"], c["sport"], c["daddr"], c["dport"]) for c in proc["connections"]}
    assert all((p["dst"], p["dport"], p["src"], p["sport"]) in ends or (p["src"], p["sport"], p["dst"], p["dport"])
               in ends for p in proc["paths"])
    assert stack_facts(doc, exe="/nonexistent")["connections"] == []
    # The socket it held whose queue overflowed, found by process and by either end.
    (q,) = doc["full_queues"]
    assert stack_facts(doc, process="python3")["full_queues"] == [q]
    assert stack_facts(doc, addr=q["last_src"])["full_queues"] == [q] == stack_facts(doc, addr=q["local"])["full_queues"]
    assert stack_facts(doc, process="python3", uid=q["uid"] + 1)["full_queues"] == []
    assert stack_facts(doc, addr=dut)["full_queues"] == []
    assert stack_facts({}, addr=dut) is None and stack_facts(doc) is None


def test_damaged_rows_are_left_out():
    doc = {"connections": [{"saddr": ["x"], "sport": 1, "daddr": "10.0.0.9", "dport": 2},
                           {"saddr": "10.0.0.1", "sport": 5, "daddr": "10.0.0.9", "dport": 6, "comm": "sshd"}],
           "drop_flows": [{"src": "10.0.0.9", "dst": "10.0.0.1", "dport": "7", "reason": "NO_SOCKET", "count": 1},
                          {"src": "10.0.0.9", "dst": "10.0.0.1", "dport": 7, "reason": "NO_SOCKET", "count": 2}],
           "paths": [{"src": "10.0.0.9", "sport": 1, "dst": "10.0.0.1", "dport": 2, "edges": "no"}]}
    f = stack_facts(doc, addr="10.0.0.9")
    assert [c["comm"] for c in f["connections"]] == ["sshd"]
    assert [d["count"] for d in f["drops"]] == [2] and f["paths"] == []
    assert stack_facts(doc, process="sshd")["connections"][0]["sport"] == 5
