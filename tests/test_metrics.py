"""The Prometheus endpoints (--metrics-addr) for real: scraped over HTTP and
parsed with prometheus_client's own parser. The analyzer with events on its
stdin and a stand-in LLM; the loader on a namespace lab's veth with a ban
dropping real pings; bad addresses and a taken port as the CLI contract says."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import urllib.parse
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from analyzer_support import analyzer_env, conn, lines, start_analyzer
from netlab import (ROOT, VENV_PY, LoaderProc, kernel_test_skip_reason, lab,  # noqa: F401 (lab)
                    read_json, unload_all, wait_until)
from netsentinel import __version__
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
            p.stdin.write(lines(scan + [conn(100, dport=8000, daddr="203.0.113.80", comm="other", exe="/opt/other")]))
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
            assert value(m, "netsentinel_build_info", version=__version__) == 1
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
        unload_all(lab)  # a stopped loader leaves enforcement pinned; --unload removes it


def test_grafana_dashboard_names_only_served_metrics():
    """docs/grafana-netsentinel.json is what scripts/grafana/make_dashboard.py
    writes, and every metric its queries name is one the endpoints serve."""
    import re
    sys.path.insert(0, str(ROOT / "scripts" / "grafana"))
    try:
        import make_dashboard
    finally:
        sys.path.pop(0)
    from netsentinel import metrics
    shipped = json.loads((ROOT / "docs" / "grafana-netsentinel.json").read_text())
    assert shipped == make_dashboard.dashboard(), "regenerate: scripts/grafana/make_dashboard.py"
    families = metrics.loader_families(
        {"events": 1, "lost": 0, "whitelisted": 0, "drops_total": 1, "blocked_connects": 0,
         "rule_drops": 0, "uptime_s": 1}, {"startup": 1}, {"192.0.2.1": {"source": "manual", "drops": 1}},
        [{"id": "r1", "hits": 2}], "native", True, 0)
    families += metrics.analyzer_families(
        {"input": {"lines": 1, "connections": 1, "other_events": {}}, "counts": {"HIGH": 1},
         "verdict_sources": {"rules": 1}, "threats": {"auto_bans": 0},
         "llm": {"calls": 1, "failures": 0, "cache_hits": 0, "queue_depth": 0, "in_flight": 0}},
        {"pending": 1}, ("2026-01-01T00:00:00Z", 1767225600.0))
    served = {s.name for f in families + list(metrics.LLM_SECONDS.collect()) for s in f.samples}
    named = {n for p in shipped["panels"] for t in p["targets"]
             for n in re.findall(r"netsentinel_\w+", t["expr"])}
    assert named and named <= served, named - served


PROMETHEUS = (shutil.which("prometheus", path="/var/cache/netsentinel/prometheus/root/usr/bin")
              or shutil.which("prometheus"))


@pytest.mark.skipif(PROMETHEUS is None,
                    reason="no prometheus binary: `sudo make install` extracts Debian's package "
                    "into /var/cache/netsentinel/prometheus")
def test_a_real_prometheus_scrapes_the_analyzer(tmp_path):
    port, prom_port = free_port(), free_port()
    (tmp_path / "prometheus.yml").write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        f"scrape_configs:\n  - job_name: netsentinel-analyzer\n"
        f"    static_configs: [{{targets: ['127.0.0.1:{port}']}}]\n")
    p = start_analyzer(tmp_path, ["--backend", "rules", "--metrics-addr", str(port)])
    prom = subprocess.Popen([PROMETHEUS, f"--config.file={tmp_path / 'prometheus.yml'}",
                             f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                             f"--web.listen-address=127.0.0.1:{prom_port}"],
                            stdout=subprocess.DEVNULL, stderr=open(tmp_path / "prometheus.log", "w"))
    try:
        p.stdin.write(lines([conn(i, daddr="203.0.113.90", dport=8000 + i) for i in range(7)]))
        p.stdin.flush()

        def queried():
            q = urllib.parse.quote("netsentinel_analyzer_lines_total")
            with urllib.request.urlopen(f"http://127.0.0.1:{prom_port}/api/v1/query?query={q}",
                                        timeout=5) as r:
                result = json.loads(r.read())["data"]["result"]
            return result and float(result[0]["value"][1]) == 7 and result[0]
        got = wait_until(queried, 60, 0.5, "Prometheus to have scraped the counter",
                         not_yet=(OSError, KeyError, ValueError),
                         each=lambda: prom.poll() is None or pytest.fail(
                             (tmp_path / "prometheus.log").read_text()[-2000:]))
        assert got["metric"]["job"] == "netsentinel-analyzer"
    finally:
        prom.terminate()
        prom.wait(timeout=30)
        p.stdin.close()
        p.wait(timeout=60)
