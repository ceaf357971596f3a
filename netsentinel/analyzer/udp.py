"""Judging outbound UDP per process (issue 12): the loader's `udp` events
(one per sending process and window, docs/events.md#udp) against
rules/udp.json. Three patterns, decided by these rules alone (no LLM: the
evidence is a count over time, not one destination to weigh):

  port_scan / host_sweep  UDP fan-out: distinct ports on one host, or distinct
      hosts on one port, over the scan rules' window and thresholds
      (llm_config.json scan_*), per executable: an unprivileged `nmap -sU`
      uses ordinary sockets. CRITICAL.
  dns_tunnel  a process that is not a resolver sending more port-53
      datagrams within dns.window_seconds than dns.datagrams: a resolver
      library sends a few per lookup; a tunnel sends one per chunk. HIGH.
  udp_beacon  one long-lived process sending a little to the same
      destination port at a regular interval (min_sightings windows, gaps of
      at least min_gap_seconds, spread within max_jitter of their mean):
      command-and-control over UDP. HIGH.

"normal" pairs (process, ports) are left out of all three: QUIC to 443 from
a browser, NTP from chronyd, a resolver asking other servers. Threats merge
per process identity (uid, executable) and category.
"""

from __future__ import annotations

import json
import os
import statistics
from collections import OrderedDict, deque
from pathlib import Path

from ..errors import NetSentinelError
from ..paths import PROJECT_ROOT
from .eventcheck import BadLine, count
from .keys import executable_key
from .rules import RuleOutcome, _event_time
from .scan import SlidingDistinct, lru_slot
from .verdict import Verdict

UDP_RULES_PATH = PROJECT_ROOT / "rules" / "udp.json"
MAX_TRACKED = 16384     # processes (DNS sums) and flows (beacon sightings) remembered, LRU
MAX_FLOWS = 256


class UdpRulesError(NetSentinelError, ValueError):
    """rules/udp.json is unusable; str() names the field."""


def load_udp_rules(path: Path = UDP_RULES_PATH) -> dict:
    try:
        raw = json.loads(Path(path).read_text())
        dns, beacon = raw["dns"], raw["beacon"]
        rules = {
            "dns_port": int(dns["port"]), "dns_datagrams": int(dns["datagrams"]),
            "dns_window": float(dns["window_seconds"]),
            "resolvers": {str(p).lower() for p in dns["resolvers"]},
            "beacon_sightings": int(beacon["min_sightings"]),
            "beacon_gap": float(beacon["min_gap_seconds"]),
            "beacon_jitter": float(beacon["max_jitter"]),
            "beacon_max_datagrams": int(beacon["max_datagrams_per_sighting"]),
            "beacon_ignore_ports": {int(p) for p in beacon["ignore_ports"]},
            "normal": [({str(p).lower() for p in n["processes"]}, {int(p) for p in n["ports"]},
                        str(n.get("why", ""))) for n in raw["normal"]]}
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise UdpRulesError(f"{path}: unusable ({type(e).__name__}: {e}); fix it or restore it "
                            "from git") from None
    if rules["beacon_sightings"] < 3 or rules["dns_datagrams"] < 1 or rules["dns_window"] <= 0:
        raise UdpRulesError(f"{path}: beacon.min_sightings must be >= 3, dns.datagrams >= 1, "
                            "dns.window_seconds > 0")
    return rules


def _names(ev: dict) -> set[str]:
    exe = (ev.get("exe") or "").replace(" (deleted)", "")
    return {n for n in ((ev.get("comm") or "").lower(), os.path.basename(exe).lower()) if n}


def invalid_udp(ev: dict) -> str | None:
    """Why a udp event cannot be judged, or None."""
    for k in ("pid", "datagrams", "hosts", "busiest_host_ports"):
        if count(ev.get(k)) is None:
            return f"{k} must be a non-negative integer, got {str(ev.get(k))[:40]!r}"
    for k in ("comm", "exe", "cmdline"):
        if ev.get(k) is not None and not isinstance(ev.get(k), str):
            return f"{k} must be a string or null"
    if ev.get("uid") is not None and count(ev.get("uid")) is None:
        return "uid must be a non-negative integer or null"
    if not isinstance(ev.get("busiest_host"), str):
        return "busiest_host must be a string"
    flows = ev.get("flows")
    if not isinstance(flows, list) or len(flows) > MAX_FLOWS:
        return f"flows must be a list of at most {MAX_FLOWS}"
    for f in flows:
        if not isinstance(f, dict) or not isinstance(f.get("daddr"), str) \
                or count(f.get("dport")) is None or f["dport"] > 65535 or count(f.get("datagrams")) is None:
            return "each flow needs a daddr, a dport (0-65535) and datagrams"
    return None


class UdpJudge:
    def __init__(self, rules: dict | None = None):
        self.rules = rules or load_udp_rules()
        self.ports = SlidingDistinct()    # (exe,) -> per host: distinct ports
        self.hosts = SlidingDistinct()    # (exe, port) -> distinct hosts
        self.dns: OrderedDict[tuple, deque] = OrderedDict()      # exe -> (t, datagrams)
        self.sightings: OrderedDict[tuple, deque] = OrderedDict()  # (pid, exe, daddr, dport) -> (t, n)

    def normal(self, ev: dict, port: int) -> str | None:
        names = _names(ev)
        return next((why for procs, ports, why in self.rules["normal"]
                     if port in ports and names & procs), None)

    def judge(self, ev: dict, cfg: dict) -> RuleOutcome | None:
        why = invalid_udp(ev)
        if why is not None:
            raise BadLine(f"udp event: {why}")
        t = _event_time(ev)
        ident = (ev.get("uid"), ev.get("exe") or f"comm:{ev.get('comm')}")
        who = f"{ev.get('comm')} ({ev.get('exe')}, pid {ev.get('pid')}, uid {ev.get('uid')})"
        flows = [f for f in ev["flows"] if not self.normal(ev, f["dport"])]
        found = [self._fanout(ev, ident, who, t, flows, cfg), self._dns(ev, ident, who, t),
                 self._beacon(ev, ident, who, t, flows)]
        found = [f for f in found if f is not None]
        if not found:
            return None
        level, category, reason, action, rule_id, target = found[0]
        v = Verdict(level=level, category=category, confidence=0.9 if level == "CRITICAL" else 0.8,
                    reason=reason, recommended_action=action, rule_ids=[rule_id], rule_level=level)
        return RuleOutcome(v, True, False, target, executable_key(ev, f"udp_{category}"))

    def _fanout(self, ev, ident, who, t, flows, cfg):
        window = cfg["scan_window_seconds"]
        top_ports, top_hosts = (0, None, []), (0, None)
        for f in flows:
            wc = self.ports.observe(ident, t, f["daddr"], f["dport"], window)
            if wc.distinct > top_ports[0]:
                top_ports = (wc.distinct, f["daddr"], wc.sample)
            hc = self.hosts.observe(ident + (f["dport"],), t, None, f["daddr"], window)
            if hc.distinct > top_hosts[0]:
                top_hosts = (hc.distinct, f["dport"])
        # The event lists its busiest flows only; its own count is exact.
        if len(flows) == len(ev["flows"]) and ev["busiest_host_ports"] > top_ports[0]:
            top_ports = (ev["busiest_host_ports"], ev["busiest_host"], top_ports[2])
        action = "stop the process; confirm the scan was authorised"
        if top_ports[0] >= cfg["scan_port_threshold"]:
            return ("CRITICAL", "port_scan",
                    f"UDP port scan: {who} sent datagrams to {top_ports[0]} distinct ports on "
                    f"{top_ports[1]} within {window:g}s (threshold {cfg['scan_port_threshold']}; e.g. "
                    f"{', '.join(map(str, top_ports[2]))})", action, "udp-fanout", None)
        if top_hosts[0] >= cfg["scan_host_threshold"]:
            return ("CRITICAL", "host_sweep",
                    f"UDP host sweep: {who} sent datagrams to {top_hosts[0]} distinct hosts on port "
                    f"{top_hosts[1]} within {window:g}s (threshold {cfg['scan_host_threshold']})",
                    action, "udp-fanout", None)
        return None

    def _dns(self, ev, ident, who, t):
        r = self.rules
        if _names(ev) & r["resolvers"]:
            return None
        per = {}
        for f in ev["flows"]:
            if f["dport"] == r["dns_port"]:
                per[f["daddr"]] = per.get(f["daddr"], 0) + f["datagrams"]
        if not per:
            return None
        q = lru_slot(self.dns, ident, lambda: deque(maxlen=4096), MAX_TRACKED)[0]
        q.append((t, sum(per.values())))
        while q and q[0][0] < t - r["dns_window"]:
            q.popleft()
        total = sum(n for _, n in q)
        if total < r["dns_datagrams"]:
            return None
        top = max(per, key=per.get)
        return ("HIGH", "dns_tunnel",
                f"DNS tunnelling pattern: {who} sent {total} port-{r['dns_port']} datagrams within "
                f"{r['dns_window']:g}s (mostly to {top}); it is not a resolver, and lookups take a few "
                f"each (threshold {r['dns_datagrams']})",
                "stop the process and look at what it sends in its queries", "udp-dns-volume", None)

    def _beacon(self, ev, ident, who, t, flows):
        r = self.rules
        for f in flows:
            if f["dport"] in r["beacon_ignore_ports"] or f["datagrams"] == 0:
                continue
            q = lru_slot(self.sightings, (ev["pid"],) + ident + (f["daddr"], f["dport"]),
                         lambda: deque(maxlen=r["beacon_sightings"]), MAX_TRACKED)[0]
            q.append((t, f["datagrams"]))
            if len(q) < r["beacon_sightings"] or max(n for _, n in q) > r["beacon_max_datagrams"]:
                continue
            gaps = [b[0] - a[0] for a, b in zip(q, list(q)[1:])]
            mean = statistics.fmean(gaps)
            if mean < r["beacon_gap"] or statistics.pstdev(gaps) > r["beacon_jitter"] * mean:
                continue
            return ("HIGH", "udp_beacon",
                    f"periodic UDP: {who} sent to {f['daddr']}:{f['dport']} every {mean:.1f}s "
                    f"({len(q)} times, {max(n for _, n in q)} datagrams at most each): a "
                    "command-and-control beacon pattern from a process not known to do this",
                    "find what the process is; ban the destination if it is a C2 server",
                    "udp-beacon", f["daddr"])
        return None
