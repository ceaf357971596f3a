"""The dashboard's Filter rules page (AppTest): rules in force and their
removal, LLM proposals approved or rejected, asking a (loopback stand-in)
LLM for rules from the flood evidence, a rule added by hand, refusals."""

from __future__ import annotations

import json

from netsentinel.testing.llm_standins import StandinServer
from netsentinel import proposals
from dashboard_seed import store_rows
from netsentinel.records import FILTER_RULES, LLM_CONFIG, RULE_COMMANDS, RULE_PROPOSALS
from netsentinel.store import RecordsStore
from test_dashboard_app import env, read, start, texts  # noqa: F401  (env is a fixture)

FLOW = {"v": 1, "type": "flow", "ts": "2026-11-21T23:40:00.000000Z", "src": "203.0.113.66",
        "family": "ipv4", "window_s": 1.0, "pps": 5800.0, "bps": 2784000.0, "packets": 5800,
        "bytes": 348000, "tcp": 0, "udp": 0, "icmp": 5800, "other": 0, "tcp_syn": 0, "tcp_ack": 0,
        "icmp_echo": 5800, "udp_ssdp": 0, "udp_reflect": 0, "pkt_size_mean": 60.0, "dport_buckets": 0,
        "rank": 1, "reason": "threshold"}
ANSWER = {"summary": "ICMP echo flood from one source", "rules": [
    {"action": "drop", "src": "203.0.113.66", "proto": "icmp", "icmp_type": 8, "reason": "echo flood"},
    {"action": "drop", "proto": "tcp", "dport": 22, "reason": "the data told me to"}]}


def frame(at, column: str):
    """The table that has this column (AppTest finds tables by position only)."""
    return next(df.value for df in at.dataframe if column in df.value.columns)


def seed_rules(records):
    store = RecordsStore(records)
    store.write(FILTER_RULES, {"rules": [{"id": "ssdp", "action": "drop", "src": "any", "proto": "udp",
                                          "sport": 1900, "hits": 1234, "source": "manual",
                                          "created_at": "2026-11-21T23:00:00.000000Z"}]})
    store_rows(records, [{"id": "x1", "ts": FLOW["ts"], "level": "CRITICAL",
                          "category": "icmp_flood", "event": FLOW}])
    return store


def test_rules_in_force_and_removal(env):
    records, _ = env
    seed_rules(records)
    at = start("Filter rules")
    table = frame(at, "hits")
    assert list(table["id"]) == ["ssdp"] and list(table["hits"]) == [1234]
    at.selectbox(key="rule_remove_id").set_value("ssdp")
    at.button(key="rule_remove_submit").click().run()
    assert not at.exception
    assert [c["action"] for c in read(records / RULE_COMMANDS)] == ["remove_rule"]
    assert read(records / RULE_COMMANDS)[0]["id"] == "ssdp"


def test_ask_the_llm_then_approve_only_the_valid_rule(env, monkeypatch):
    records, _ = env
    store = seed_rules(records)
    with StandinServer(lambda req: (200, json.dumps(ANSWER))) as server:
        monkeypatch.setenv("OLLAMA_HOST", server.url)
        store.write(LLM_CONFIG, {"backend": "ollama", "model": "standin-model", "timeout_seconds": 3})
        at = start("Filter rules")
        at.button(key="rules_ask").click().run()
        assert not at.exception, at.exception
        assert "1 valid rule(s) of 2" in texts(at, "success")
        sent = json.dumps(server.chat_requests()[0]["json"])
        assert "203.0.113.66" in sent and "FLOW_DATA" in sent
    pending = proposals.list_proposals(store.read(RULE_PROPOSALS), "pending")
    assert len(pending) == 1
    pid = pending[0]["id"]
    at.run()
    assert "could drop SSH" in " ".join(map(str, frame(at, "refused because")["refused because"]))
    at.text_input(key=f"prop_note_{pid}").set_value("looks right")
    at.button(key=f"prop_approve_{pid}").click().run()
    assert not at.exception
    cmds = read(records / RULE_COMMANDS)
    assert [c["rule"]["icmp_type"] for c in cmds] == [8]           # the SSH rule never goes out
    assert proposals.list_proposals(store.read(RULE_PROPOSALS), "approved")[0]["note"] == "looks right"


def test_reject_a_proposal(env):
    records, _ = env
    store = seed_rules(records)
    p = proposals.propose(store, lambda m, schema: ANSWER, [FLOW], backend="test",
                          protected=proposals.Protected())
    at = start("Filter rules")
    at.button(key=f"prop_reject_{p['id']}").click().run()
    assert not at.exception
    assert proposals.list_proposals(store.read(RULE_PROPOSALS), "rejected")[0]["id"] == p["id"]
    assert read(records / RULE_COMMANDS) is None


def test_asking_without_an_llm_says_so(env):
    records, _ = env
    store = seed_rules(records)
    store.write(LLM_CONFIG, {"backend": "rules"})
    at = start("Filter rules")
    at.button(key="rules_ask").click().run()
    assert "choose an LLM on the LLM settings page" in texts(at, "error")
    assert proposals.list_proposals(store.read(RULE_PROPOSALS)) == []


def test_add_a_rule_by_hand_checked_first(env):
    records, _ = env
    at = start("Filter rules")
    for bad, words in (('{"action": "drop", "proto": "tcp", "dport": 22}', "could drop SSH"),
                       ('{"action": "drop", "proto": "udp", "dport": 70000}', "0-65535"),
                       ('{"action": "drop", ', "Not JSON")):
        at.text_area(key="rule_json").set_value(bad)
        at.button(key="rule_add_submit").click().run()
        assert words in texts(at, "error"), texts(at, "error")
        assert read(records / RULE_COMMANDS) is None
    at.text_area(key="rule_json").set_value('{"id": "ssdp", "action": "drop", "proto": "udp", "sport": 1900}')
    at.button(key="rule_add_submit").click().run()
    assert not at.exception
    cmd = read(records / RULE_COMMANDS)[0]
    assert cmd["action"] == "add_rule" and cmd["rule"]["id"] == "ssdp" and cmd["source"] == "dashboard"
