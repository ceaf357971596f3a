"""Prometheus metrics: `--metrics-addr [HOST:]PORT` on unified_ebpf.py and
llm_analyzer.py (host 127.0.0.1 when only a port is given).

Built at scrape time from what each process already counts (the loader's
stats and ban table, the analyzer's status), so the hot paths gain no work;
the one exception is LLM_SECONDS, a histogram the LLM worker observes.
Names follow Prometheus conventions: netsentinel_..., counters end in
_total, times in seconds. docs/SERVICE.md lists them all; a scrape that
fails to read a value leaves it out rather than failing the process.
"""

from __future__ import annotations

import argparse
import ipaddress
from typing import TYPE_CHECKING, Callable, Iterable

from . import __version__
from .timefmt import parse_iso

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry
    from prometheus_client.core import Metric

DEFAULT_HOST = "127.0.0.1"


# prometheus_client is imported where metrics are made, not with this module:
# a process without --metrics-addr never needs it (importing it was ~4 % of a
# 100,000-event analyzer run).
def _kind(name: str):
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
    return CounterMetricFamily if name == "counter" else GaugeMetricFamily


class _LazyHistogram:
    """A prometheus_client Histogram made at its first use."""

    def __init__(self, *args, **kwargs):
        self._args, self._kwargs, self._histogram = args, kwargs, None

    def _made(self):
        if self._histogram is None:
            from prometheus_client import Histogram
            self._histogram = Histogram(*self._args, **self._kwargs)
        return self._histogram

    def observe(self, value: float) -> None:
        self._made().observe(value)

    def collect(self):
        return self._made().collect()


# LLM answers take from tens of milliseconds (a local model, cached) to a minute.
LLM_SECONDS = _LazyHistogram("netsentinel_llm_request_duration_seconds",
                             "Time an LLM backend took to answer one question",
                             buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60), registry=None)


def parse_addr(text: str) -> tuple[str, int]:
    """'9101' / ':9101' -> (127.0.0.1, 9101); '0.0.0.0:9101', '[::1]:9101'.
    An argparse type: a bad value is a usage error."""
    host, sep, port = text.rpartition(":")
    if not sep:
        host, port = "", text
    host = host.strip("[]") or DEFAULT_HOST
    try:
        ipaddress.ip_address(host)
        p = int(port)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"invalid address {text!r}: expected [HOST:]PORT with an IP address, e.g. 9101 or "
            "127.0.0.1:9101") from None
    if not 1 <= p <= 65535:
        raise argparse.ArgumentTypeError(f"port {p} is outside 1-65535")
    return host, p


class _Snapshot:
    def __init__(self, families: Callable[[], Iterable[Metric]]):
        self.families = families

    def collect(self) -> Iterable[Metric]:
        info = _kind("gauge")("netsentinel_build_info", "NetSentinel version", labels=["version"])
        info.add_metric([__version__], 1)
        yield info
        yield from self.families()


def serve(addr: tuple[str, int], families: Callable[[], Iterable[Metric]],
          *extra) -> CollectorRegistry:
    """Serve /metrics on addr in a daemon thread. OSError when the port
    cannot be bound (the caller's runtime failure)."""
    from prometheus_client import CollectorRegistry, start_http_server
    registry = CollectorRegistry()
    registry.register(_Snapshot(families))
    for collector in extra:
        registry.register(collector)
    start_http_server(addr[1], addr=addr[0], registry=registry)
    return registry


def _counter(name: str, doc: str, value, labels: dict | None = None) -> Metric:
    m = _kind("counter")(name, doc, labels=list(labels or {}))
    m.add_metric(list((labels or {}).values()), float(value or 0))
    return m


def _gauge(name: str, doc: str, value, labels: dict | None = None) -> Metric:
    m = _kind("gauge")(name, doc, labels=list(labels or {}))
    m.add_metric(list((labels or {}).values()), float(value or 0))
    return m


def _labelled(kind: str, name: str, doc: str, label: str, values: dict) -> Metric:
    m = _kind(kind)(name, doc, labels=[label])
    for k, v in sorted(values.items(), key=lambda kv: str(kv[0])):
        m.add_metric([str(k)], float(v or 0))
    return m


def loader_families(stats: dict, events_by_type: dict, bans: dict, rules: list, xdp_mode: str | None,
                    cgroup_block: bool, rejected: int) -> list[Metric]:
    """stats as Loader.stats(); bans as banned_ips.json; rules as filter_rules.json's list."""
    by_source: dict = {}
    drops: dict = {}
    for rec in bans.values():
        src = str(rec.get("source") or "manual")
        by_source[src] = by_source.get(src, 0) + 1
        drops[src] = drops.get(src, 0) + int(rec.get("drops") or 0)
    mode = _kind("gauge")("netsentinel_xdp_mode", "1 for the XDP attach mode in use",
                          labels=["mode"])
    mode.add_metric([xdp_mode or "off"], 1)
    return [
        _labelled("counter", "netsentinel_loader_events",
                  "Events the loader wrote to its stream, by type", "type", events_by_type),
        _counter("netsentinel_loader_connections", "Connection events captured in the kernel",
                 stats.get("events")),
        _counter("netsentinel_loader_lost_events", "Connection events lost to a full kernel buffer",
                 stats.get("lost")),
        _counter("netsentinel_loader_whitelisted_connections", "Connections of whitelisted "
                 "addresses, processes or ports", stats.get("whitelisted")),
        _labelled("gauge", "netsentinel_bans_active", "Bans in force, by source",
                  "source", by_source),
        _labelled("counter", "netsentinel_ban_drops", "Packets dropped by the bans in "
                  "force, by ban source (a lifted ban takes its count with it)", "source", drops),
        _counter("netsentinel_xdp_drops", "Packets dropped by XDP ban lookups", stats.get("drops_total")),
        _counter("netsentinel_blocked_connects", "connect()/sendmsg() calls refused by the cgroup "
                 "hooks", stats.get("blocked_connects")),
        _counter("netsentinel_rule_drops", "Packets dropped by filter rules", stats.get("rule_drops")),
        _labelled("counter", "netsentinel_rule_hits", "Packets matched, by filter rule",
                  "rule", {r.get("id"): r.get("hits") for r in rules if isinstance(r, dict)}),
        _counter("netsentinel_ban_commands_rejected", "Ban commands refused", rejected),
        mode,
        _gauge("netsentinel_cgroup_block", "1 when the cgroup connect/sendmsg hooks are attached",
               1 if cgroup_block else 0),
        _gauge("netsentinel_loader_uptime_seconds", "Seconds since the loader started",
               stats.get("uptime_s")),
    ]


def analyzer_families(status: dict, threat_counts: dict, last_event: tuple | None) -> list[Metric]:
    """status as Analyzer.status(); threat_counts {status: n} from
    pending_threats.json; last_event (event ts, time it was handled)."""
    inp = status.get("input") or {}
    llm = dict(status.get("llm") or {})
    out = [
        _counter("netsentinel_analyzer_lines", "Input lines read", inp.get("lines")),
        _counter("netsentinel_analyzer_invalid_lines", "Input lines skipped as invalid",
                 inp.get("invalid_lines")),
        _labelled("counter", "netsentinel_analyzer_events", "Input events, by type", "type",
                  {"connection": inp.get("connections"), **(inp.get("other_events") or {})}),
        _labelled("counter", "netsentinel_analyzer_connections",
                  "Connections classified, by level", "level", status.get("counts") or {}),
        _labelled("counter", "netsentinel_analyzer_verdicts",
                  "Verdicts, by who decided (rules, llm, rules_fallback)", "source",
                  status.get("verdict_sources") or {}),
        _labelled("gauge", "netsentinel_threats", "Threats in pending_threats.json, by "
                  "status", "status", threat_counts),
        _counter("netsentinel_analyzer_auto_bans", "Threats banned automatically (auto-ban, "
                 "auto-block)", (status.get("threats") or {}).get("auto_bans")),
        _gauge("netsentinel_llm_queue_depth", "Questions waiting for the LLM", llm.pop("queue_depth", 0)),
        _gauge("netsentinel_llm_in_flight", "Questions being answered", llm.pop("in_flight", 0)),
        _gauge("netsentinel_llm_cache_entries", "Answers cached", llm.pop("cache_size", 0)),
    ]
    for name, value in sorted(llm.items()):
        out.append(_counter(f"netsentinel_llm_{name}", f"LLM worker: {name.replace('_', ' ')}", value))
    if last_event and last_event[0]:
        try:
            lag = last_event[1] - parse_iso(last_event[0])
            out.append(_gauge("netsentinel_analyzer_lag_seconds", "From the loader writing the "
                              "last event to the analyzer handling it", max(0.0, lag)))
        except (TypeError, ValueError):
            pass
    return out


def add_option(p) -> None:
    """--metrics-addr, alike on every process that serves metrics."""
    p.add_argument("--metrics-addr", type=parse_addr, metavar="[HOST:]PORT",
                   help=f"serve Prometheus metrics at http://HOST:PORT/metrics (HOST defaults to "
                        f"{DEFAULT_HOST}; docs/SERVICE.md lists the metrics)")


def serve_or_exit(prog: str, addr: tuple[str, int], families: Callable[[], Iterable[Metric]],
                  *extra) -> None:
    """serve(), or the one-line runtime failure of a port that cannot be bound."""
    from .cliargs import EXIT_FAILURE, die
    try:
        serve(addr, families, *extra)
    except OSError as e:
        die(prog, f"cannot serve metrics on {addr[0]}:{addr[1]}: {e.strerror or e}; "
                  "choose another --metrics-addr", EXIT_FAILURE)
