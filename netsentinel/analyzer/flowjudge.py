"""Inbound `flow` events in the analyzer: a flood becomes a threat (one per
source and kind), auto-blocked when CRITICAL (auto_block_floods) and the
auto-ban policy allows it (autoban.py), and may trigger an LLM proposal of
filter rules for a person to review. `accepts`, `tcp_health` and
`connection` events feed the per-source inbound view (inbound.py): brute
force, the handshakes a SYN flood lacks, sessions. A mixin of
pipeline.Analyzer, whose state it uses."""

from __future__ import annotations

import hashlib
import threading
import time

from .. import proposals
from ..llm.backends import BackendError
from ..llm.config import LLM_BACKENDS
from ..netinfo import ProtectedCache
from ..records import RULE_COMMANDS
from ..store import StoreError
from .autoban import AutoBanPolicy
from .evidence import threat_from
from .floods import AggregateDetector, FloodDetector
from .inbound import BruteForce, InboundView
from .sinks import RecordsSink

PROPOSE_EVERY_S = 600.0  # at most one LLM rule proposal per flooding source per this
PROPOSED_MAX = 4096      # flooding sources remembered for that
# A flood from one source that may not be banned (issue 13) is rate-limited
# instead: protocol and packets/s let through from that source.
SOURCE_CAPS = {"syn_flood": ("tcp", 100), "icmp_flood": ("icmp", 100), "ssdp_flood": ("udp", 100),
               "reflection": ("udp", 1000), "udp_flood": ("udp", 1000)}
RATE_LIMIT_TTL_S = 600   # an aggregate flood's rate-limit rule lasts this long after its last renewal
_PROTECTED = ProtectedCache()  # for rule proposals; the sink keeps its own for auto-bans
# Flood kinds a two-way session makes a stream: an iperf3 UDP test, a video call.
SESSION_KINDS = frozenset({"udp_flood"})
# A stream that starts with its TCP control connection (iperf3) is judged
# before the loader's next stack interval (2 s) reports that session: a
# window that carries TCP ACKs from the source is held at MEDIUM for up to
# this many windows, until the session is known. A flood that fakes ACKs
# gains these windows, no more.
HOLD_WINDOWS = 2
HELD_MAX = 4096


class FlowJudging:
    """handle_flow and what it needs; Analyzer provides settings, sink, store,
    manager, warn, whitelist(), llm_cfg(), _track_settings(), _tally()."""

    def init_inbound(self) -> None:
        """The inbound view and the auto-ban policy the sink asks before a
        flood auto-ban (called once by Analyzer.__init__)."""
        self.inbound = InboundView()
        self._held: dict[str, int] = {}   # source -> windows its UDP verdict was held
        self.autoban = AutoBanPolicy(self.inbound, self.settings.current)
        self._limited: dict[str, float] = {}   # rate-limit rule id -> when last queued
        self._aggregates = AggregateDetector()
        self.sink.flood_gate = self._flood_gate

    def _flood_gate(self, threat: dict) -> bool:
        """May the sink auto-ban this flood's source? When the policy says no
        (spoofable evidence, or an address this host needs), the source is
        only rate-limited (issue 13): a ratelimit rule on it, never a ban."""
        if self.autoban.gate(threat, self.warn):
            return True
        self._limit_source(threat)
        return False

    def _limit_source(self, threat: dict) -> None:
        src, cap = threat.get("target"), SOURCE_CAPS.get(threat.get("category"))
        if not isinstance(src, str) or cap is None:
            return
        proto, pps = cap
        if proto == "icmp" and ":" in src:
            proto = "icmpv6"
        rid = f"src-{proto}-{src}".replace(":", "_")
        if len(rid) > 48:  # filterrules.ID_RE: a long IPv6 address becomes a digest
            rid = f"src-{proto}-{hashlib.sha1(src.encode()).hexdigest()[:16]}"
        self._queue_limit({"id": rid, "action": "ratelimit", "src": src, "proto": proto, "rate_pps": pps,
                           "reason": f"{threat.get('category')} from {src}, not banned (its address may "
                                     f"be spoofed or is one this host needs): capped at {pps}/s"})

    def _queue_limit(self, rule: dict) -> bool:
        """Queue an auto-flood rate limit (renewed at half its life while the
        flood lasts, not at every window); False when it was not queued."""
        now = time.monotonic()
        if now - self._limited.get(rule["id"], -RATE_LIMIT_TTL_S) < RATE_LIMIT_TTL_S / 2:
            return False
        rule = {**rule, "ttl_seconds": RATE_LIMIT_TTL_S, "source": "auto-flood"}
        try:
            self.store.append_command({"action": "add_rule", "rule": rule, "source": "auto-flood"},
                                      name=RULE_COMMANDS)
        except StoreError as e:
            self.warn(f"rate limit {rule['id']} not queued: {e}; retried at the next window")
            return False
        self._limited[rule["id"]] = now
        self.warn(f"auto-block: rate limit {rule['id']} ({rule['rate_pps']}/s) for "
                  f"{RATE_LIMIT_TTL_S}s: {rule['reason']}")
        return True

    def handle_accepts(self, ev: dict) -> None:
        for b in self.inbound.on_accepts(ev):
            self._brute_force(ev, b)

    def _brute_force(self, ev: dict, b: BruteForce) -> None:
        """Many accepted connections from one source to one port: HIGH (a
        person decides), CRITICAL auto-blocked (handshakes are not spoofable)."""
        sighting = {"type": "accepts", "ts": ev.get("ts"), "src": b.src, "port": b.port,
                    "count": b.count, "window_s": round(b.window_s, 1)}
        verdict = {"level": b.level, "category": "brute_force", "confidence": 0.9,
                   "rule_level": b.level, "reason": b.reason, "verdict_source": "rules",
                   "rule_ids": ["inbound:brute_force"],
                   "recommended_action": "ban the source" if b.level == "CRITICAL"
                   else "check the service's logins; ban the source if they are not yours",
                   "detector": "thresholds"}
        entry = RecordsSink.make_entry(sighting, verdict, "rules", False)
        self.sink.add(entry, threat_from(entry, b.src, f"flood|brute_force|{b.port}|{b.src}", kind="flood"))
        self._tally(b.level, "rules")

    def floods(self, cfg: dict) -> FloodDetector:
        gen = self.settings.generation
        if self._flood_detector is None or self._flood_detector[0] != gen:
            self._flood_detector = (gen, FloodDetector(cfg["flood_thresholds"], self._flow_model))
        return self._flood_detector[1]

    def handle_flow(self, ev: dict) -> None:
        """An inbound per-source window: a flood becomes a threat (one per
        source and kind), auto-blocked when CRITICAL (auto_block_floods)."""
        if not isinstance(ev.get("src"), str):
            return
        cfg = self.settings.current()
        self._track_settings(cfg)
        src = ev["src"]
        v = self.floods(cfg).judge(ev, self.inbound.accept_rate(src))
        if v is None:
            self._held.pop(src, None)
            return
        session = self.inbound.session(src) if v.category in SESSION_KINDS else None
        held = self._held.get(src, 0) if v.category in SESSION_KINDS else HOLD_WINDOWS
        if session:
            # Two-way and established: a stream the host takes part in, kept
            # in view below the threat levels, never blocked.
            v.level, v.category = "MEDIUM", "udp_session_stream"
            v.reason += f"; not a flood: {session}"
        elif held < HOLD_WINDOWS and (held or int(ev.get("tcp_ack") or 0) > 0):
            self._held[src] = held + 1
            while len(self._held) > HELD_MAX:
                self._held.pop(next(iter(self._held)))
            v.reason += (f"; held at MEDIUM (window {held + 1} of {HOLD_WINDOWS}): TCP ACKs from it "
                         "suggest a session being set up")
            v.level = "MEDIUM"
        elif v.level == "CRITICAL":
            refusal = self.autoban.refusal({"target": src, "category": v.category})
            v.reason += f"; {refusal}" if refusal else "; may be auto-blocked: " + (
                self.inbound.proven(src) or "handshake evidence")
        verdict = {"level": v.level, "category": v.category, "confidence": v.confidence,
                   "rule_level": v.level, "reason": v.reason, "verdict_source": "rules", "rule_ids": [f"flood:{v.category}"],
                   "recommended_action": "ban the source" if v.level != "MEDIUM" else "watch the source",
                   "detector": v.source, "model_label": v.model_label,
                   "model_confidence": v.model_confidence}
        entry = RecordsSink.make_entry(ev, verdict, "rules", False)
        self.sink.add(entry, threat_from(entry, ev["src"], f"flood|{v.category}|{ev['src']}", kind="flood"))
        self._tally(v.level, "rules")
        if v.level == "CRITICAL" and cfg["propose_rules_on_flood"] and self._backend in LLM_BACKENDS:
            now = time.monotonic()
            if now - self._proposed.get(ev["src"], -PROPOSE_EVERY_S) >= PROPOSE_EVERY_S:
                if len(self._proposed) >= PROPOSED_MAX:
                    self._proposed = {k: t for k, t in self._proposed.items()
                                      if now - t < PROPOSE_EVERY_S}
                self._proposed[ev["src"]] = now
                threading.Thread(target=self._propose_rules, args=(ev, v), daemon=True,
                                 name="rule-proposal").start()

    def handle_aggregate(self, ev: dict) -> None:
        """An aggregate window (one port and protocol, all sources): a flood
        is logged and, when CRITICAL, answered with a rate-limit rule for that
        port and protocol (auto_block_floods), never with bans: its sources
        may be spoofed, even to addresses this host needs."""
        cfg = self.settings.current()
        self._track_settings(cfg)
        now = time.monotonic()
        v = self._aggregates.judge(ev, now)
        if v is None:
            return
        verdict = {"level": v.level, "category": v.category, "confidence": 1.0, "rule_level": v.level,
                   "reason": v.reason, "verdict_source": "rules", "rule_ids": [f"flood:aggregate:{v.category}"],
                   "recommended_action": "rate limit the port" if v.rule else "watch the port",
                   "detector": "aggregate"}
        self.sink.add(RecordsSink.make_entry(ev, verdict, "rules", False), None)
        self._tally(v.level, "rules")
        if v.rule is not None and cfg["auto_block_floods"]:
            self._queue_limit({**v.rule, "reason": v.rule.get("reason") or v.reason})
            if v.rule.get("proto") == "icmp":  # the ICMP total counts both families: cap both
                self._queue_limit({**v.rule, "id": f"{v.rule['id']}-v6", "proto": "icmpv6",
                                   "reason": v.rule.get("reason") or v.reason})

    def _propose_rules(self, ev: dict, v) -> None:
        """Ask the LLM for filter rules against this flood; a person reviews them."""
        cfg = self.llm_cfg()
        wl = self.whitelist()
        try:
            backend = self.manager.get(cfg)
            p = proposals.propose(
                self.store, lambda messages, schema: backend.ask_json(messages, cfg, schema), [ev],
                backend=backend.describe(), protected=_PROTECTED.get(wl.config["protect_ssh_ports"]),
                ssh_ports=wl.config["protect_ssh_ports"], context=v.reason,
                trigger={"kind": "flood", "src": ev["src"], "category": v.category})
        except Exception as e:  # noqa: BLE001 (ProposalError, BackendError, StoreError, or a
            # hand-edited rule_proposals.json): this one-off thread says why and ends
            why = str(e) if isinstance(e, (proposals.ProposalError, BackendError, StoreError)) \
                else f"{type(e).__name__}: {' '.join(str(e).split())[:200]}"
            self.warn(f"no rule proposal for the {v.category} from {ev['src']}: {why}")
            return
        valid = sum(r["valid"] for r in p["rules"])
        self.warn(f"rule proposal {p['id']} for the {v.category} from {ev['src']}: {valid} valid "
                  f"rule(s) of {len(p['rules'])}, waiting for review")
