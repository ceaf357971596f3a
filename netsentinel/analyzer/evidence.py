"""From a recorded verdict to a pending threat, and what an automatic ban
may rest on: evidence the rules measured, never words a model wrote."""

from __future__ import annotations

from .keys import destination_key
from ..levels import THREAT_LEVELS
from ..sightings import add_targets, sighting_of


def auto_bannable(threat: dict, min_confidence: float) -> bool:
    """May auto_ban_critical ban this threat's target? Only on evidence an
    attacker's text cannot write: the rules (matches and measurements) said
    CRITICAL with enough confidence. A level a model raised (perhaps because
    a command line told it to) never bans by itself; it waits for a person."""
    conf = threat.get("rule_confidence")
    return (threat.get("rule_level") == "CRITICAL" and not threat.get("aggregate")
            and isinstance(conf, (int, float)) and conf >= min_confidence)


def threat_from(entry: dict, target: str | None, dedupe_key: str | None,
                rule_confidence: float | None = None, targets=(), kind: str | None = None) -> dict | None:
    """The pending-threat record for a HIGH/CRITICAL verdict, else None.
    rule_confidence: the rules' own confidence when a model's words are in
    entry (for rule verdicts it is entry's). targets: the destinations a
    sweep touched in its window (listed in targets_sample with this one).
    kind: "flood" or "scan" for a threat about a remote source, not a
    local process."""
    if entry["level"] not in THREAT_LEVELS:
        return None
    event = entry["event"]
    rule_level = entry.get("rule_level") or (
        entry["level"] if entry.get("verdict_source", "rules") != "llm" else None)
    if rule_confidence is None and entry.get("verdict_source") != "llm":
        rule_confidence = entry["confidence"]
    threat = {"level": entry["level"], "category": entry["category"],
              "rule_level": rule_level, "rule_confidence": rule_confidence,
              "confidence": entry["confidence"], "reason": entry["reason"],
              "recommended_action": entry["recommended_action"],
              "verdict_source": entry["verdict_source"], "backend": entry["backend"],
              "rule_ids": entry.get("rule_ids", []), "event": event,
              "target": target or event.get("daddr"),
              "dedupe_key": dedupe_key or destination_key(event.get("daddr"))}
    add_targets(threat, [event.get("daddr"), *targets])
    threat["sightings"] = [sighting_of(threat)]  # this sighting's evidence, whole
    if kind is not None:
        threat["kind"] = kind
    return threat
