"""The analyzer's rule engine, table-driven from tests/samples/rules/*.json:
each rule of rules/default_rules.json has sample events that must make it
fire and sample events that must not. Plus the rules-file validation and
the known-bad list file."""

from __future__ import annotations

import ipaddress
import json
import os
from pathlib import Path

import pytest

from netsentinel.analyzer.behaviour import judge_raw_socket
from netsentinel.analyzer.rule import signals_of
from netsentinel.analyzer.ruleindex import DECIDED
from netsentinel.analyzer.rules import DEFAULT_RULES_PATH, RuleEngine, RuleFileError
from netsentinel.llm.config import validate_llm_config
from netsentinel.whitelist import Whitelist

from analyzer_support import BASE_EVENT, ts as _ts

SAMPLES = Path(__file__).parent / "samples" / "rules"


def events_of(case: dict) -> list[dict]:
    """The event(s) a case describes: one, or a generated sequence."""
    base = dict(BASE_EVENT, **case.get("event", {}))
    seq = case.get("sequence")
    if seq is None:
        return [dict(base, ts=_ts(0))]
    out = []
    for i in range(seq["count"]):
        ev = dict(base, ts=_ts(i * seq.get("step_seconds", 1)))
        start = seq["start"]
        if seq["vary"] == "daddr":
            ev["daddr"] = str(ipaddress.ip_address(start) + i)
        else:
            ev[seq["vary"]] = start + i
        if seq.get("also_vary_pid"):
            ev["pid"] = ev["tid"] = base["pid"] + i
        out.append(ev)
    return out


def load_cases():
    for path in sorted(SAMPLES.glob("*.json")):
        sample = json.loads(path.read_text())
        for case in sample["cases"]:
            yield pytest.param(sample, case, id=f"{sample['rule']}: {case['name']}")


@pytest.mark.parametrize("sample,case", list(load_cases()))
def test_rule_samples(sample, case):
    engine = RuleEngine(DEFAULT_RULES_PATH)
    cfg = validate_llm_config(case.get("config", {}))
    wl = Whitelist(sample["whitelist"]) if "whitelist" in sample else None
    out = None
    for ev in events_of(case):
        out = judge_raw_socket(engine, ev) if ev["type"] == "raw_socket" else \
            engine.evaluate(ev, cfg, wl)
    fired = sample["rule"] in out.verdict.rule_ids
    assert fired == case["fires"], (
        f"rule {sample['rule']} {'did not fire' if case['fires'] else 'fired'}: "
        f"rule_ids={out.verdict.rule_ids} level={out.verdict.level} reason={out.verdict.reason!r}")
    if "level" in case:
        assert out.verdict.level == case["level"], out.verdict
    if "settled" in case:
        assert out.settled == case["settled"], out
    if "target" in case:
        assert out.target == case["target"], out


def test_index_and_match_rest_agree_with_match():
    """evaluate() runs only the rules the index picked, with match_rest()
    (the index checked may_match) or the fields the index kept for a rule
    its key decides: every sample event of every rule gets the same fields
    from that as from the whole match()."""
    engine = RuleEngine(DEFAULT_RULES_PATH)
    checked = 0
    for sample, case in (p.values for p in load_cases()):
        for ev in events_of(case):
            if ev["type"] != "connection":
                continue
            have = signals_of(ev)
            steps = {rule: (code, fields) for rule, code, fields in engine.index.steps(ev, have)}
            picked = engine.index.candidates(ev)
            assert list(picked) == list(steps)
            for rule in engine.index.rules:
                fast = rule.match_rest(ev, have) if rule in picked else None
                if rule.kind == "match":
                    assert fast == rule.match(ev), (sample["rule"], case["name"], rule.id)
                    if rule in steps and steps[rule][0] == DECIDED:   # the key's fields
                        assert steps[rule][1] == fast, (sample["rule"], case["name"], rule.id)
                else:  # whitelist and scan rules: picked exactly when may_match holds
                    assert (rule in picked) == rule.may_match(
                        ev["dport"], bool(have), ev.get("comm"), ev.get("exe")), rule.id
                checked += 1
    assert checked > 1000


def test_every_rule_has_samples_both_ways():
    rules = json.loads(DEFAULT_RULES_PATH.read_text())["rules"]
    for rule in rules:
        path = SAMPLES / f"{rule['id']}.json"
        assert path.exists(), f"rule {rule['id']} has no sample file {path.name}"
        cases = json.loads(path.read_text())["cases"]
        assert any(c["fires"] for c in cases), f"{rule['id']}: no case where it fires"
        assert any(not c["fires"] for c in cases), f"{rule['id']}: no case where it does not fire"


def test_scan_is_one_threat_key_whatever_the_ports():
    """A suspicious port seen before the scan threshold and the scan itself
    share the dedupe key (the process identity), and the key has no port."""
    engine = RuleEngine(DEFAULT_RULES_PATH)
    cfg = validate_llm_config({})
    keys = set()
    for i, port in enumerate([23, 445, 3389] + list(range(1000, 1020))):
        out = engine.evaluate(dict(BASE_EVENT, dport=port, ts=_ts(i)), cfg)
        if out.verdict.level in ("HIGH", "CRITICAL"):
            keys.add(out.dedupe_key)
    assert keys == {"proc|connection|uid=1000|comm=curl"}
    assert out.verdict.category == "port_scan" and out.target == "10.0.0.5"
    assert "pid 4242" in out.verdict.reason and "distinct ports on 10.0.0.5" in out.verdict.reason


def _rules_file(tmp_path, rules, default=None) -> Path:
    p = tmp_path / "rules.json"
    p.write_text(json.dumps({"version": 1, "default": default or {}, "rules": rules}))
    return p


@pytest.mark.parametrize("rules,message", [
    ([{"id": "x", "level": "SEVERE", "when": {"dport_in": [1]}}], "level must be one of"),
    ([{"id": "x", "level": "HIGH", "when": {"port": [1]}}], "unknown condition(s) port"),
    ([{"id": "x", "level": "HIGH", "when": {"dport_in": ["90-80"]}}], "outside 0-65535"),
    ([{"id": "x", "level": "HIGH", "when": {"dport_in": ["http"]}}], "is not a port"),
    ([{"id": "x", "level": "HIGH", "when": {"dport_in": [1]}, "reason": "{comm.__class__}"}],
     "unknown field"),
    ([{"id": "x", "level": "HIGH", "when": {"cmdline_regex": "("}}], "does not compile"),
    ([{"id": "x", "level": "HIGH", "when": {"dport_in": [1]}},
      {"id": "x", "level": "HIGH", "when": {"dport_in": [2]}}], "duplicate rule id"),
    ([{"id": "x", "level": "HIGH"}], "needs at least one condition"),
    ([{"id": "x", "kind": "scan", "level": "HIGH"}], "measure"),
    ([{"id": "x", "kind": "scan", "measure": "ports", "level": "HIGH", "group_by": [["cwd"]]}],
     "group_by"),
    ([{"id": "x", "level": "HIGH", "when": {"dport_in": [1]}, "colour": "red"}], "unknown key"),
])
def test_bad_rules_file_is_refused_with_one_line(tmp_path, rules, message):
    with pytest.raises(RuleFileError) as err:
        RuleEngine(_rules_file(tmp_path, rules))
    text = str(err.value)
    assert message in text and "\n" not in text
    assert str(tmp_path / "rules.json") in text


def test_rules_file_that_is_not_json(tmp_path):
    p = tmp_path / "rules.json"
    p.write_text('{"rules": [')
    with pytest.raises(RuleFileError, match="invalid JSON at line 1"):
        RuleEngine(p)


def test_known_bad_list_reload_extra_lists_and_bad_lines(tmp_path, monkeypatch):
    from netsentinel.analyzer import addrlist

    monkeypatch.setattr(addrlist, "CHECK_EVERY", 0.0)
    bad = tmp_path / "feed.txt"
    bad.write_text("# my feed\n192.0.2.1\nnot-an-address\n10.1.2.3/8  # host bits set\n")
    rules = _rules_file(tmp_path, [{"id": "bad", "level": "CRITICAL",
                                    "when": {"daddr_in_lists": ["feed.txt"]}}])
    extra = tmp_path / "extra.txt"
    extra.write_text("2001:db8::/32\n")
    warnings = []
    engine = RuleEngine(rules, extra_lists=[str(extra)], warn=warnings.append)
    cfg = validate_llm_config({})
    assert any("feed.txt:3" in w and "not a valid IP" in w for w in warnings)
    assert any("feed.txt:4" in w and "did you mean 10.0.0.0/8" in w for w in warnings)

    def level(daddr):
        return engine.evaluate(dict(BASE_EVENT, daddr=daddr, ts=_ts(0)), cfg).verdict.level

    assert level("192.0.2.1") == "CRITICAL"
    assert level("2001:db8:1::1") == "CRITICAL"   # from the extra list
    assert level("192.0.2.2") == "INFO"
    before = bad.stat().st_mtime_ns
    bad.write_text("192.0.2.2\n")                 # edited while running: picked up
    # The same size as before: give it a later mtime rather than wait for the clock to tick.
    os.utime(bad, ns=(before + 10**9, before + 10**9))
    assert level("192.0.2.2") == "CRITICAL"
    assert level("192.0.2.1") == "INFO"
    bad.unlink()                                  # removed: empty, with a warning
    assert level("192.0.2.2") == "INFO"
    assert any("treated as empty" in w for w in warnings)


def test_verdicts_built_from_a_rules_base_equal_the_dataclass_built_through_its_init():
    # rules._verdict skips Verdict.__init__ (per event): it must stay the
    # same object __init__ makes, whatever fields Verdict gains.
    import dataclasses
    from netsentinel.analyzer.reasons import render
    from netsentinel.analyzer.rules import _verdict
    from netsentinel.analyzer.verdict import Verdict
    engine = RuleEngine(DEFAULT_RULES_PATH)
    ev = dict(BASE_EVENT, type="connection")
    for rule in [*engine.rules, engine.default]:
        got = _verdict(rule, ev, {}, [rule.id])
        want = Verdict(level=rule.level, category=rule.category, confidence=rule.confidence,
                       reason=render(rule.template, ev, {}), recommended_action=rule.recommended_action,
                       verdict_source="rules", rule_ids=[rule.id], rule_level=rule.level)
        assert type(got) is Verdict and got == want, rule.id
        assert dataclasses.asdict(got) == dataclasses.asdict(want), rule.id
