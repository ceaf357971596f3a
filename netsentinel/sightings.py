"""One threat's sightings: what a threat of records/pending_threats.json
shows of the sightings folded into it (netsentinel/threats.py keeps the
queue; this, how one more sighting changes an entry).

The fields a threat shows (SIGHTING) are always one sighting's: a stronger
or newer one replaces them all together, so a reason is never shown beside
another sighting's process. Its destinations (targets_sample) and last few
sightings are kept, bounded.
"""

from __future__ import annotations

from .levels import rank

TARGET_SAMPLE = 20
SIGHTINGS_KEPT = 10
# What a threat shows of one sighting, replaced only all together: its
# rule evidence too, so that an auto-ban rests on the rules' own word about
# the very target it bans, never on another sighting's.
SIGHTING = ("level", "category", "confidence", "reason", "recommended_action", "verdict_source",
            "backend", "rule_ids", "event", "target", "rule_level", "rule_confidence")


def actor_of(threat: dict) -> str:
    """Who a threat is about: a flood's source, else the process identity
    (exe or comm, and uid) of its sighting."""
    ev = threat.get("event") if isinstance(threat.get("event"), dict) else {}
    if threat.get("kind") == "flood":
        return f"source {ev.get('src')}"
    return f"{ev.get('exe') or ev.get('comm')} (uid {ev.get('uid')})"


def folded(threat: dict, key: str, why: str) -> dict:
    """The aggregate/overflow threat a new target folds into."""
    out = dict(threat, dedupe_key=key, target=None, aggregate=True,
               targets_sample=list(threat.get("targets_sample") or [])[:TARGET_SAMPLE], reason=f"{why}; e.g. {threat.get('reason')}"[:600],
               recommended_action="review the process (or source) behind these; "
                                  "single destinations are not banned from here")
    return out


def rule_evidence(t: dict) -> tuple:
    """How strong the rules' own case for a threat is: (level rank, confidence)."""
    conf = t.get("rule_confidence")
    return (rank(t.get("rule_level")),
            conf if isinstance(conf, (int, float)) and not isinstance(conf, bool) else -1)


def add_targets(t: dict, targets) -> None:
    """Add destinations to t's targets_sample: each once, none empty, at
    most TARGET_SAMPLE in all (the first ones seen stay)."""
    sample = t.setdefault("targets_sample", [])
    for target in targets:
        if target and target not in sample and len(sample) < TARGET_SAMPLE:
            sample.append(target)


def sighting_of(threat: dict) -> dict:
    """One sighting's evidence, kept together: when, what was said, who, where."""
    ev = threat.get("event") if isinstance(threat.get("event"), dict) else {}
    return {"ts": ev.get("ts"), "level": threat.get("level"), "category": threat.get("category"),
            "reason": str(threat.get("reason"))[:300], "pid": ev.get("pid"), "uid": ev.get("uid"),
            "comm": ev.get("comm"), "exe": ev.get("exe"),
            "daddr": ev.get("daddr", ev.get("src")), "dport": ev.get("dport")}


def merge_sighting(t: dict, new: dict) -> None:
    """Fold `new` (one sighting, or a batch of them) into the open threat
    t: its destinations and sightings are added (bounded); the shown
    evidence (SIGHTING) becomes new's, whole, when new is stronger: by
    level, then the rules' own evidence (a rule-measured CRITICAL over a
    model's), then confidence; the newest of equals. An aggregate keeps
    its own words; its level and rule evidence only rise."""
    add_targets(t, new.get("targets_sample") or [(new.get("event") or {}).get("daddr")])
    kept = t.get("sightings") if isinstance(t.get("sightings"), list) else []
    t["sightings"] = (kept + (new.get("sightings") or [sighting_of(new)]))[-SIGHTINGS_KEPT:]
    if t.get("aggregate"):  # never auto-banned (no target); what rules said, for people
        if rule_evidence(new) > rule_evidence(t):
            t["rule_level"], t["rule_confidence"] = new.get("rule_level"), new.get("rule_confidence")
        if rank(new.get("level")) > rank(t.get("level")):
            t["level"] = new["level"]
        return
    if _strength(new) >= _strength(t):
        for k in SIGHTING:
            if k in new:
                t[k] = new[k]


def _strength(t: dict) -> tuple:
    conf = t.get("confidence", 0)
    return (rank(t.get("level")), rule_evidence(t),
            conf if isinstance(conf, (int, float)) and not isinstance(conf, bool) else 0)
