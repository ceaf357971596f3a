"""FlowTracker arithmetic on fixed samples with an injected clock."""

from netsentinel.loader.flows import COUNTERS, FlowTracker


def stats(**kw):
    base = {c: 0 for c in COUNTERS}
    base.update(family="ipv4", dport_bits=0, first_seen_ns=0, last_seen_ns=0)
    base.update(kw)
    return base


class Feed:
    def __init__(self):
        self.t = 100.0
        self.samples = []

    def clock(self):
        return self.t

    def read(self):
        return self.samples.pop(0)


def test_rates_top_talkers_threshold_and_eviction():
    f = Feed()
    tr = FlowTracker(f.read, top_n=1, pps_threshold=500, clock=f.clock)
    f.samples = [
        {"10.0.0.1": stats(packets=10, bytes=1000, icmp=10, icmp_echo=10),
         "10.0.0.2": stats(packets=5, bytes=500)},
        {"10.0.0.1": stats(packets=1010, bytes=61000, icmp=1010, icmp_echo=1010),
         "10.0.0.2": stats(packets=15, bytes=1500, udp=10, dport_bits=0b1011),
         "10.0.0.3": stats(packets=600, bytes=36000, tcp=600, tcp_syn=600)},
        {"10.0.0.1": stats(packets=20, bytes=1200, icmp=20),   # evicted and seen again
         "10.0.0.2": stats(packets=15, bytes=1500)},
    ]
    assert tr.sample() == []          # baseline only
    f.t += 1.0
    evs = {e["src"]: e for e in tr.sample()}
    assert set(evs) == {"10.0.0.1", "10.0.0.3"}        # top 1 plus everything over 500 pps
    a = evs["10.0.0.1"]
    assert a["pps"] == 1000.0 and a["icmp_echo"] == 1000 and a["pkt_size_mean"] == 60.0
    assert a["reason"] == "threshold" and a["rank"] == 1 and a["bps"] == 60000 * 8
    assert evs["10.0.0.3"]["tcp_syn"] == 600 and evs["10.0.0.3"]["rank"] == 2
    f.t += 2.0
    evs = tr.sample()
    assert [e["src"] for e in evs] == ["10.0.0.1"]      # 10.0.0.2 sent nothing new
    assert evs[0]["packets"] == 20 and evs[0]["pps"] == 10.0 and evs[0]["reason"] == "top"
