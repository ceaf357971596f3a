"""The Prometheus endpoints (--metrics-addr) for real: scraped over HTTP and
parsed with prometheus_client's own parser. The analyzer with events on its
stdin and a stand-in LLM; the loader on a namespace lab's veth with a ban
dropping real pings; bad addresses and a taken port as the CLI contract says."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from analyzer_support import analyzer_env, conn, lines, start_analyzer
from netlab import (ROOT, VENV_PY, LoaderProc, kernel_test_skip_reason, lab,  # noqa: F401 (lab)
                    read_json, wait_until)
from netsentinel.metrics import parse_addr
from netsentinel.testing.llm_standins import StandinServer

SKIP = kernel_test_skip_reason()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def samples(text: str) -> dict:
    """{(name, frozenset(labels)): value} over every sample, and the family types."""
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
        out[("#type", fam.name)] = fam.type
    return out


def value(m: dict, name: str, **labels) -> float:
    return m.get((name, frozenset(labels.items())), -1.0)


def scrape(port: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        return samples(r.read().decode())


def test_parse_addr():
    assert parse_addr("9101") == ("127.0.0.1", 9101)
    assert parse_addr(":9101") == ("127.0.0.1", 9101)
    assert parse_addr("0.0.0.0:80") == ("0.0.0.0", 80)
    assert parse_addr("[::1]:9101") == ("::1", 9101)
    for bad in ("x", "localhost:9101", "9101:", "0", "1.2.3.4:99999"):
        with pytest.raises(Exception):
            parse_addr(bad)


def test_analyzer_metrics_move_with_events(tmp_path):
    port = free_port()
    scan = [conn(i, daddr="203.0.113.55", dport=p) for i, p in enumerate(range(1000, 1040))]
    with StandinServer("critical") as llm:
        p = start_analyzer(tmp_path, ["--backend", "openai", "--base-url", f"{llm.url}/v1",
                                      "--model", "standin-model", "--timeout", "3",
                                      "--metrics-addr", str(port)])
        try:
            m0 = wait_until(lambda: scrape(port), 30, what="the analyzer's metrics",
                            not_yet=(OSError,))
            assert value(m0, "netsentinel_analyzer_lines_total") == 0
            assert m0[("#type", "netsentinel_analyzer_connections")] == "counter"
            p.stdin.write(lines(scan + [conn(100, dport=8000, daddr="203.0.113.80")]))
            p.stdin.flush()
            m = wait_until(lambda: (lambda m: m if value(m, "netsentinel_llm_request_duration_seconds_count")
                                    >= 1 and value(m, "netsentinel_threats", status="pending") >= 2
                                    else None)(scrape(port)), 30, what="metrics after the events")
            assert value(m, "netsentinel_analyzer_lines_total") == 41
            assert value(m, "netsentinel_analyzer_events_total", type="connection") == 41
            assert value(m, "netsentinel_analyzer_connections_total", level="CRITICAL") >= 1
            assert value(m, "netsentinel_analyzer_verdicts_total", source="llm") >= 1
            assert value(m, "netsentinel_llm_calls_total") >= 1
            assert value(m, "netsentinel_llm_failures_total") == 0
            assert value(m, "netsentinel_analyzer_lag_seconds") >= 0
            assert value(m, "netsentinel_build_info", version=__import__("netsentinel").__version__) == 1
        finally:
            p.stdin.close()
            assert p.wait(timeout=60) == 0, p.stderr.read()


def test_bad_or_taken_metrics_address_is_one_line(tmp_path):
    r = subprocess.run([sys.executable, str(ROOT / "llm_analyzer.py"), "--metrics-addr", "host:x"],
                       capture_output=True, text=True, timeout=60, env=analyzer_env(tmp_path))
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "invalid address" in r.stderr
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        r = subprocess.run([sys.executable, str(ROOT / "llm_analyzer.py"), "--records",
                            str(tmp_path / "rec"), "--backend", "rules", "--metrics-addr", str(port)],
                           capture_output=True, text=True, timeout=60, env=analyzer_env(tmp_path),
                           input="")
    assert r.returncode == 1, r.stderr
    (err,) = [x for x in r.stderr.splitlines() if "error" in x]
    assert err.startswith("llm_analyzer.py: error: cannot serve metrics on 127.0.0.1:") and \
        "choose another --metrics-addr" in err


@pytest.mark.skipif(SKIP is not None, reason=str(SKIP))
def test_loader_metrics_count_bans_and_drops(lab, tmp_path):
    records, cfg = tmp_path / "records", tmp_path / "filter_config.json"
    records.mkdir()
    cfg.write_text("{}")
    port = free_port()
    lp = LoaderProc(lab, records, cfg, "--metrics-addr", str(port), echo=False)

    def ns_scrape():
        # The loader's 127.0.0.1 is the lab namespace's own loopback.
        r = lab.ns_exec(lab.dut, VENV_PY, "-c", "import sys, urllib.request; sys.stdout.write("
                        f"urllib.request.urlopen('http://127.0.0.1:{port}/metrics', timeout=5)"
                        ".read().decode())")
        return samples(r.stdout) if r.returncode == 0 else None
    try:
        lp.wait_started()
        (records / "ban_commands.json").write_text(json.dumps(
            [{"action": "ban", "ip": lab.peer4, "reason": "metrics test", "source": "crowdsec"}]))
        lp.wait_for(lambda e: e["type"] == "ban" and e.get("ip") == lab.peer4, 10, "the ban")
        assert not lab.ping(lab.peer, lab.dut4, count=3, wait=0.3)
        m = wait_until(lambda: (lambda m: m if m and value(m, "netsentinel_ban_drops_total",
                                                           source="crowdsec") >= 3 else None)(ns_scrape()),
                       15, what="the drops in the metrics")
        assert value(m, "netsentinel_bans_active", source="crowdsec") == 1
        assert value(m, "netsentinel_xdp_drops_total") >= 3
        assert value(m, "netsentinel_loader_events_total", type="ban") == 1
        assert value(m, "netsentinel_loader_events_total", type="startup") == 1
        assert value(m, "netsentinel_loader_lost_events_total") == 0
        assert value(m, "netsentinel_cgroup_block") == 1
        (mode,) = [k for k in m if k[0] == "netsentinel_xdp_mode"]
        assert dict(mode[1])["mode"] in ("native", "generic") and m[mode] == 1
        assert m[("#type", "netsentinel_ban_drops")] == "counter"
    finally:
        assert lp.stop() == 0
    assert not lab.xdp_attached()
