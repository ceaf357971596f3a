"""FlowTracker arithmetic on fixed map contents with an injected clock: only
the sources the kernel reported are read, each with one lookup."""

import ipaddress

from netsentinel.loader.flows import COUNTERS, FlowTracker, syncookie_state


def stats(**kw):
    base = {c: 0 for c in COUNTERS}
    base.update(dport_bits=0, first_seen_ns=0, last_seen_ns=0)
    base.update(kw)
    return base


class Kernel:
    """The Enforcer's side: a flows map to look sources up in, and an epoch."""

    def __init__(self):
        self.t = 100.0
        self.flows: dict[tuple, dict] = {}
        self.epoch = 0
        self.lookups = 0

    def clock(self):
        return self.t

    def advance_flow_epoch(self):
        self.epoch += 1
        return self.epoch - 1

    def flow_stats(self, key, epoch):
        self.lookups += 1
        st = self.flows.get(key)
        return dict(st) if st else None


def key(addr):
    return (4, ipaddress.ip_address(addr).packed + bytes(12))


def report(tr, addr):
    return tr.on_event({"type": "source", "src": addr, "family": "ipv4", "key": key(addr),
                        "count": 100, "elapsed_ns": 1000})


def test_reported_sources_only_their_windows_top_and_threshold():
    k = Kernel()
    tr = FlowTracker(k, top_n=1, pps_threshold=500, watch_pps=100, clock=k.clock)
    # 10,000 sources in the map (a spoofed flood's leftovers): none reported.
    for i in range(10000):
        k.flows[key(f"10.9.{i // 250}.{i % 250}")] = stats(packets=1)
    k.flows[key("10.0.0.1")] = stats(packets=10, bytes=1000, icmp=10, icmp_echo=10)
    k.flows[key("10.0.0.3")] = stats(packets=0)
    assert report(tr, "10.0.0.1") is None and report(tr, "10.0.0.3") is None
    assert tr.watched() == 2 and k.lookups == 2          # the baselines
    k.t += 1.0
    k.flows[key("10.0.0.1")] = stats(packets=1010, bytes=61000, icmp=1010, icmp_echo=1010)
    k.flows[key("10.0.0.3")] = stats(packets=150, bytes=9000, tcp=150, tcp_syn=150, dport_bits=0b1011)
    report(tr, "10.0.0.1")                                # still over: renewed
    evs = {e["src"]: e for e in tr.sample()}
    assert k.lookups == 4                                 # O(reported), not O(map)
    assert set(evs) == {"10.0.0.1"}                       # top 1 plus everything over 500 pps
    a = evs["10.0.0.1"]
    assert a["pps"] == 1000.0 and a["icmp_echo"] == 1000 and a["pkt_size_mean"] == 60.0
    assert a["reason"] == "threshold" and a["rank"] == 1 and a["bps"] == 60000 * 8
    assert tr.watched() == 2                              # 150 pps, not renewed: still over watch_pps
    k.t += 4.0
    k.flows[key("10.0.0.1")] = stats(packets=20, bytes=1200, icmp=20)   # evicted and seen again
    evs = tr.sample()
    assert [e["src"] for e in evs] == ["10.0.0.1"]        # 10.0.0.3 sent nothing new
    assert evs[0]["packets"] == 20 and evs[0]["pps"] == 5.0 and evs[0]["reason"] == "top"
    assert tr.watched() == 0                              # both quiet and unreported for 2 s: let go


def test_a_new_source_is_read_from_its_first_packet():
    """One packet a second (reported in every window at --flow-watch-pps 1)
    still gives flow events: a new source's first window is its whole life."""
    k = Kernel()
    tr = FlowTracker(k, watch_pps=1, clock=k.clock)
    k.flows[key("10.0.0.9")] = stats(packets=1, bytes=84, icmp=1, first_seen_ns=int(99.5e9))
    report(tr, "10.0.0.9")
    k.t += 0.5
    evs = tr.sample()
    assert len(evs) == 1 and evs[0]["packets"] == 1 and evs[0]["window_s"] == 1.0
    k.t += 1.0
    k.flows[key("10.0.0.9")] = stats(packets=2, bytes=168, icmp=2, first_seen_ns=int(99.5e9))
    report(tr, "10.0.0.9")                                # the next window's report
    assert [e["packets"] for e in tr.sample()] == [1]


def test_evicted_source_is_dropped_from_the_watch():
    k = Kernel()
    tr = FlowTracker(k, clock=k.clock)
    k.flows[key("10.0.0.7")] = stats(packets=5)
    report(tr, "10.0.0.7")
    del k.flows[key("10.0.0.7")]
    k.t += 1
    assert tr.sample() == [] and tr.watched() == 0


def test_aggregate_records_become_flow_aggregate_bodies(tmp_path):
    k = Kernel()
    tr = FlowTracker(k, clock=k.clock, tcp_state=lambda: {"tcp_syncookies": 1})
    crossed = tr.on_event({"type": "crossed", "kind": "syn", "dport": 80, "count": 500,
                           "elapsed_ns": 50_000_000})
    assert crossed == {"kind": "syn", "proto": "tcp", "dport": 80, "phase": "crossed", "packets": 500,
                       "window_s": 1.0, "elapsed_s": 0.05, "pps": 500.0,
                       "syncookies": {"tcp_syncookies": 1}}
    window = tr.on_event({"type": "window", "kind": "icmp", "dport": 0, "count": 30000,
                          "elapsed_ns": 1_000_000_000})
    assert window["dport"] is None and window["pps"] == 30000.0 and "syncookies" not in window


def test_syncookie_state_reads_the_proc_files(tmp_path):
    (tmp_path / "sys/net/ipv4").mkdir(parents=True)
    (tmp_path / "net").mkdir()
    (tmp_path / "sys/net/ipv4/tcp_syncookies").write_text("1\n")
    (tmp_path / "net/netstat").write_text(
        "TcpExt: SyncookiesSent SyncookiesRecv SyncookiesFailed EmbryonicRsts\n"
        "TcpExt: 12 3 4 0\nIpExt: InNoRoutes\nIpExt: 0\n")
    (tmp_path / "net/snmp").write_text("Tcp: RtoAlgorithm PassiveOpens\nTcp: 1 77\n")
    assert syncookie_state(str(tmp_path)) == {"tcp_syncookies": 1, "sent": 12, "recv": 3, "failed": 4,
                                              "passive_opens": 77}
    assert syncookie_state(str(tmp_path / "none"))["sent"] is None


def test_floods_spread_over_ports_come_from_the_totals_unless_a_port_crossed():
    k = Kernel()
    tr = FlowTracker(k, clock=k.clock, agg_pps={"syn": 500, "udp": 2000}, tcp_state=lambda: {})
    assert tr.spread({"tcp_syn": 0, "udp": 0}) == []            # the baseline
    k.t += 1.0
    out = tr.spread({"tcp_syn": 9000, "udp": 100})
    assert out == [{"kind": "syn", "proto": "tcp", "dport": None, "phase": "window", "packets": 9000,
                    "window_s": 1.0, "elapsed_s": 1.0, "pps": 9000.0, "syncookies": {}}]
    tr.on_event({"type": "crossed", "kind": "syn", "dport": 80, "count": 500, "elapsed_ns": 1})
    k.t += 1.0
    assert tr.spread({"tcp_syn": 18000, "udp": 100}) == []     # one port had it: said there


def test_a_window_too_short_for_a_rate_waits_for_the_next_sample():
    """Three pings reported a millisecond before the sample are not 3000/s:
    the packets stay in the window and come out at the next sample."""
    k = Kernel()
    tr = FlowTracker(k, pps_threshold=200, watch_pps=1, clock=k.clock)
    k.flows[key("10.0.0.8")] = stats(packets=3, bytes=252, icmp=3, first_seen_ns=int(99.999e9))
    report(tr, "10.0.0.8")
    assert tr.sample() == []
    k.t += 0.5
    evs = tr.sample()
    assert len(evs) == 1 and evs[0]["packets"] == 3 and evs[0]["reason"] == "top"
    assert evs[0]["pps"] < 10
