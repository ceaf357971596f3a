"""Hostile input cannot stop the analyzer while it pretends to run: every
bad stdin line and records file is refused with a one-line reason and kept
aside, the process goes on judging, memory stays bounded, and when records
cannot be written at all it says so and exits non-zero. Against the real
llm_analyzer.py process. (The model path and the review queue:
test_analyzer_queue.py.)"""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from analyzer_support import conn, feed_and_measure, lines, pending, read, rss_kb, start_analyzer, \
    status_of, wait_for
from netsentinel.analyzer.inputs import MAX_LINE

SCAN = [conn(100 + i, pid=31337, dport=20000 + i) for i in range(20)]   # a port scan: CRITICAL


def flow(**fields) -> dict:
    ev = {"v": 1, "type": "flow", "ts": conn()["ts"], "src": "10.215.9.9", "family": "ipv4",
          "window_s": 1.0, "pps": 10.0, "packets": 10, "bytes": 600, "icmp": 10, "icmp_echo": 10}
    ev.update(fields)
    return ev


# ------------------------------------------------------------- stdin lines
HOSTILE_LINES = [
    ('["x", 1, null]', "not a JSON object but list"),
    ("[" * 30_000 + "]" * 30_000, "nested deeper than 8 levels"),
    (json.dumps(dict(conn(), extra=json.loads("[" * 30 + "]" * 30))), "nested deeper than 8 levels"),
    (json.dumps(flow(window_s="abc")), "flow event: window_s must be a number"),
    (json.dumps(flow(packets=[])), "flow event: packets must be a number"),
    (json.dumps(flow()).replace('"pps": 10.0', '"pps": NaN'), "NaN is not a number JSON allows"),
    (json.dumps(flow()).replace('"pps": 10.0', '"pps": 1e400'), "number 1e400 is out of range"),
    (json.dumps(flow()).replace('"pps": 10.0', '"pps": -Infinity'), "-Infinity is not a number"),
    (json.dumps(flow(src="not-an-address")), "flow event: src 'not-an-address' is not an IP"),
    (json.dumps(dict(conn(), ts="yesterday")), "ts 'yesterday' is not an ISO-8601 time"),
    (json.dumps(conn(daddr="10.0.0.300")), "daddr '10.0.0.300' is not an IP address"),
    (json.dumps(conn(pid=-1)), "pid -1 outside 0-4294967295"),
    (json.dumps(conn(whitelisted={"a": 1})), "whitelisted must be a string"),
]


HUGE_START = '{"v":1,"type":"stats","ts":"'


def test_hostile_lines_are_refused_kept_aside_and_judging_goes_on(tmp_path):
    records = tmp_path / "records"
    proc = start_analyzer(tmp_path, ["--backend", "rules", "--status-interval", "0.2"])
    try:
        w = proc.stdin
        for text, _ in HOSTILE_LINES:
            w.write(text + "\n")
        # Not UTF-8, and a lone surrogate escape (valid JSON: judged, made writable).
        w.flush()
        proc.stdin.buffer.write(b'{"v":1,"type":"connection","comm":"\xff"}\n')
        w.write(json.dumps(conn(5, comm="evil\ud800", exe="/usr/bin/evil", dport=23, daddr="10.0.0.6")) + "\n")
        # 200 MB on one line: read past in chunks, never held.
        chunk = "A" * (1 << 20)
        w.write(HUGE_START + chunk)
        for _ in range(199):
            w.write(chunk)
        w.write('"}\n')
        w.write(lines(SCAN))
        w.flush()
        assert wait_for(lambda: status_of(records).get("events_total") == 21, timeout=60)
        peak = rss_kb(proc.pid, "VmHWM")
        proc.stdin.close()
        assert proc.wait(timeout=60) == 0
    finally:
        proc.kill()
    err = proc.stderr.read()
    assert peak < 160_000, f"peak RSS {peak} kB: a long line was buffered whole"
    status = status_of(records)
    n_bad = len(HOSTILE_LINES) + 2
    assert status["input"]["invalid_lines"] == n_bad and status["running"] is False
    assert status["recording"]["ok"] and status["recording"]["writer_errors"] == 0
    kept = [json.loads(ln) for ln in (records / "analyzer_rejected.jsonl").read_text().splitlines()]
    assert len(kept) == n_bad
    for (text, why), k in zip(HOSTILE_LINES, kept):
        assert why in k["reason"], (why, k)
        assert "\n" not in k["reason"] and len(k["excerpt"]) <= 2000
    assert "not UTF-8" in kept[len(HOSTILE_LINES)]["reason"]
    huge = 200 * (1 << 20) + len(HUGE_START) + len('"}\n')
    assert kept[-1]["reason"] == f"line of {huge} bytes is over the {MAX_LINE}-byte cap"
    assert "input line 1: not a JSON object but list; skipped" in err
    (scan,) = [t for t in pending(records) if t["category"] == "port_scan"]
    assert scan["level"] == "CRITICAL" and scan["count"] == 6
    telnet = [e for e in read(records, "dashboard_logs.json")["entries"] if e["event"]["dport"] == 23]
    assert telnet[0]["event"]["comm"] == "evil\\ud800"


# ------------------------------------------------------------ records files
KEY = "proc|connection|uid=1000|comm=curl"  # conn()'s process identity (keys.process_key)


def test_hostile_records_files_are_set_aside_and_recording_goes_on(tmp_path):
    records = tmp_path / "records"
    records.mkdir()
    (records / "pending_threats.json").write_text(json.dumps(
        ["x", 1, None, {"id": "abc123", "status": "pending", "count": "many", "level": "HIGH",
                        "category": "suspicious_port", "confidence": "high",
                        "dedupe_key": KEY, "target": "10.0.0.5", "event": conn()}]))
    (records / "llm_config.json").write_text('{"a":' * 50_000 + "1" + "}" * 50_000)
    proc = start_analyzer(tmp_path, ["--backend", "rules", "--status-interval", "0.2", "--history"])
    try:
        proc.stdin.write(lines([conn(1, dport=23)]))
        proc.stdin.flush()
        assert wait_for(lambda: status_of(records).get("events_total") == 1, timeout=30)
        # A records file replaced by a directory while running.
        (records / "dashboard_logs.json").unlink()
        (records / "dashboard_logs.json").mkdir()
        (records / "analyzed_events.jsonl").unlink()
        (records / "analyzed_events.jsonl").mkdir()
        proc.stdin.write(lines(SCAN))
        proc.stdin.flush()
        assert wait_for(lambda: status_of(records).get("events_total") == 21, timeout=30)
        assert wait_for(lambda: (records / "dashboard_logs.json").is_file(), timeout=30)
        proc.stdin.close()
        assert proc.wait(timeout=60) == 0
    finally:
        proc.kill()
    err = proc.stderr.read()
    status = status_of(records)
    # Refused by the store's one safe parser (netsentinel/jsonsafe.py), not a crash.
    assert status["config"]["error"].startswith("llm_config.json: nested 50000 levels deep")
    assert status["recording"]["ok"] and status["recording"]["writer_errors"] == 0
    assert "pending_threats.json: 3 entries are not threats (no id or status); kept aside" in err
    aside = [p for p in records.iterdir() if p.name.startswith("pending_threats.json.corrupt-")]
    assert len(aside) == 1 and json.loads(aside[0].read_text())[:3] == ["x", 1, None]
    for name in ("dashboard_logs.json", "analyzed_events.jsonl"):
        assert any(p.name.startswith(f"{name}.corrupt-") and p.is_dir() for p in records.iterdir())
        assert f"records write failed: {name}" in err and "set aside as" in err
    assert len(read(records, "dashboard_logs.json")["entries"]) == 21  # the window is in memory
    threats = {t["dedupe_key"]: t for t in pending(records)}
    # The hand-edited count restarted; the telnet sighting and the scan merged into it.
    assert threats[KEY]["id"] == "abc123" and threats[KEY]["count"] == 1 + 1 + 6
    assert threats[KEY]["level"] == "CRITICAL" and threats[KEY]["category"] == "port_scan"


@pytest.mark.skipif(os.geteuid() != 0, reason="bind mounts need root")
def test_records_that_stay_unwritable_make_it_say_so_and_exit_non_zero(tmp_path):
    """pending_threats.json becomes a mount point (a directory that cannot
    be moved aside): the status says recording fails, and the analyzer
    exits with status 3 instead of judging into the void."""
    records = tmp_path / "records"
    records.mkdir()
    target = records / "pending_threats.json"
    target.mkdir()
    (tmp_path / "elsewhere").mkdir()
    subprocess.run(["mount", "--bind", str(tmp_path / "elsewhere"), str(target)], check=True)
    try:
        proc = start_analyzer(tmp_path, ["--backend", "rules", "--status-interval", "0.2"])
        try:
            proc.stdin.write(lines(SCAN))
            proc.stdin.flush()
            failing = wait_for(lambda: not status_of(records)["recording"]["ok"], timeout=30)
            assert failing, status_of(records)
            # stdin stays open: the analyzer must stop by itself.
            assert proc.wait(timeout=60) == 3
        finally:
            proc.kill()
            proc.wait()
    finally:
        subprocess.run(["umount", str(target)], check=True)
    err = proc.stderr.read()
    status = status_of(records)
    assert status["recording"]["fatal"].startswith("records could not be written for")
    assert "pending_threats.json" in status["recording"]["last_error"]
    assert "exiting with status 3 so that a supervisor notices" in err


# ------------------------------------------------------------------ memory
def test_many_processes_keep_memory_bounded_and_evictions_counted(tmp_path):
    records = tmp_path / "records"
    rss = feed_and_measure(tmp_path, 40_000, lambda i: conn(
        i / 1000, pid=100_000 + i, comm=f"w{i}", sid=100_000 + i, dport=443,
        daddr=f"10.215.{i >> 8 & 255}.{i & 255}"))
    mem = status_of(records)["memory"]
    assert mem["processes_tracked"] == 4096 and mem["processes_evicted"] == 40_000 - 4096
    # Two scan rules, each a short (1,024 groups) and a long (256) window.
    assert mem["scan_groups"] <= 2 * (1024 + 256) and mem["scan_groups_evicted"] > 0
    assert mem["baseline_executables"] == 512 and mem["baseline_evicted"] == 40_000 - 512
    assert rss[40_000] - rss[20_000] < 20_000, rss


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_the_writer_thread_survives_errors_and_is_restarted_if_it_dies():
    """Any exception in a flush is one line and the loop goes on; a thread
    killed anyway (SystemExit escapes `except Exception`) is restarted by
    the reader's periodic check."""
    import threading

    from netsentinel.analyzer.guard import Flusher

    calls, warned = [], []
    third = threading.Event()

    def flush():
        calls.append(1)
        if len(calls) == 1:
            raise UnicodeEncodeError("utf-8", "\ud800", 0, 1, "surrogates not allowed")
        if len(calls) == 2:
            raise SystemExit  # what no except Exception catches
        third.set()
        return True

    f = Flusher(flush, lambda: None, lambda: {"failing_for_s": None}, warned.append,
                every=0.01, status_interval=60)
    f.start()
    assert wait_for(lambda: len(calls) >= 2 and not f._thread.is_alive(), timeout=10)
    assert f.crashes == 1 and "records writer: UnicodeEncodeError" in warned[0]
    f.ensure_alive()
    assert third.wait(10) and f.restarts == 1
    assert "records writer thread had stopped; restarted (1 so far)" in warned
    f.join(5)
