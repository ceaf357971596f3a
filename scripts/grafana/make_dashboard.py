"""Writes docs/grafana-netsentinel.json, the Grafana dashboard over the
--metrics-addr metrics (docs/SERVICE.md). Run after changing a panel:
    .venv/bin/python scripts/grafana/make_dashboard.py
tests/test_metrics.py checks that every metric it names is one NetSentinel serves."""

from __future__ import annotations

import json
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent.parent / "docs" / "grafana-netsentinel.json"
DS = {"type": "prometheus", "uid": "${datasource}"}


def panel(i: int, title: str, kind: str, targets: list[tuple[str, str]], x: int, y: int,
          w: int = 8, h: int = 7, unit: str = "short", description: str = "") -> dict:
    return {
        "id": i, "type": kind, "title": title, "description": description, "datasource": DS,
        "gridPos": {"x": x, "y": y, "w": w, "h": h},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom"}} if kind == "timeseries"
        else {"reduceOptions": {"calcs": ["lastNotNull"]}, "colorMode": "value"},
        "targets": [{"refId": chr(65 + n), "expr": expr, "legendFormat": legend, "datasource": DS}
                    for n, (expr, legend) in enumerate(targets)],
    }


PANELS = [
    ("Bans active", "stat", [("sum(netsentinel_bans_active)", "bans")], "short", ""),
    ("Pending threats", "stat", [('netsentinel_threats{status="pending"}', "pending")], "short",
     "Waiting for a person: netsentinel threats list"),
    ("XDP mode", "stat", [("netsentinel_xdp_mode", "{{mode}}")], "short",
     "native, generic or off (then only the cgroup hooks enforce)"),
    ("Analyzer lag", "stat", [("netsentinel_analyzer_lag_seconds", "lag")], "s",
     "From the loader writing the last connection event to the analyzer handling it"),
    ("Loader events / s by type", "timeseries",
     [("sum by (type) (rate(netsentinel_loader_events_total[5m]))", "{{type}}")], "ops", ""),
    ("Lost events / s", "timeseries",
     [("rate(netsentinel_loader_lost_events_total[5m])", "lost")], "ops",
     "Non-zero: raise the loader's --buffer-pages"),
    ("Drops / s by ban source", "timeseries",
     [("sum by (source) (rate(netsentinel_ban_drops_total[5m]))", "{{source}}"),
      ("rate(netsentinel_rule_drops_total[5m])", "filter rules")], "pps", ""),
    ("Blocked connects / s", "timeseries",
     [("rate(netsentinel_blocked_connects_total[5m])", "blocked")], "ops",
     "Local processes refused a connection to a banned address"),
    ("Bans by source", "timeseries", [("netsentinel_bans_active", "{{source}}")], "short", ""),
    ("Connections / s by level", "timeseries",
     [("sum by (level) (rate(netsentinel_analyzer_connections_total[5m]))", "{{level}}")], "ops", ""),
    ("Threats by status", "timeseries", [("netsentinel_threats", "{{status}}")], "short", ""),
    ("Auto-bans / h", "timeseries",
     [("increase(netsentinel_analyzer_auto_bans_total[1h])", "auto-bans")], "short", ""),
    ("LLM calls / s", "timeseries",
     [("rate(netsentinel_llm_calls_total[5m])", "calls"),
      ("rate(netsentinel_llm_failures_total[5m])", "failures"),
      ("rate(netsentinel_llm_cache_hits_total[5m])", "cache hits")], "ops", ""),
    ("LLM latency", "timeseries",
     [("histogram_quantile(0.5, sum by (le) (rate(netsentinel_llm_request_duration_seconds_bucket[5m])))",
       "p50"),
      ("histogram_quantile(0.95, sum by (le) (rate(netsentinel_llm_request_duration_seconds_bucket[5m])))",
       "p95")], "s", ""),
    ("LLM queue", "timeseries",
     [("netsentinel_llm_queue_depth", "queued"), ("netsentinel_llm_in_flight", "in flight")],
     "short", ""),
    ("Filter rule hits / s", "timeseries",
     [("sum by (rule) (rate(netsentinel_rule_hits_total[5m]))", "{{rule}}")], "pps", ""),
]


def dashboard() -> dict:
    panels = []
    for i, (title, kind, targets, unit, desc) in enumerate(PANELS):
        if kind == "stat":
            x, y, w, h = 6 * i, 0, 6, 4
        else:
            n = i - 4
            x, y, w, h = 8 * (n % 3), 4 + 7 * (n // 3), 8, 7
        panels.append(panel(i + 1, title, kind, targets, x, y, w, h, unit, desc))
    return {
        "title": "NetSentinel", "uid": "netsentinel", "tags": ["netsentinel", "security"],
        "schemaVersion": 38, "version": 1, "editable": True, "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"}, "timezone": "utc",
        "templating": {"list": [{"name": "datasource", "label": "Prometheus", "type": "datasource",
                                 "query": "prometheus"}]},
        "panels": panels,
    }


if __name__ == "__main__":
    OUT.write_text(json.dumps(dashboard(), indent=2) + "\n")
    print(f"wrote {OUT}")
