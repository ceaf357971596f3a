"""The real pipeline, kernel included: `unified_ebpf.py --no-xdp |
llm_analyzer.py --backend rules` (monitor only: the loader attaches its
connection tracepoint/kprobe and nothing on any interface). One process
scanning 30 ports of 127.0.0.2 must give exactly one CRITICAL pending
threat whose target is the scanned host."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap

import pytest

from analyzer_support import pending, read, start_pipeline, wait_for
from netlab import kernel_test_skip_reason

SKIP = kernel_test_skip_reason()
pytestmark = pytest.mark.skipif(SKIP is not None, reason=str(SKIP))

SCANNER = textwrap.dedent("""
    import socket
    for port in range(20000, 20030):
        s = socket.socket()
        s.settimeout(0.5)
        try:
            s.connect(("127.0.0.2", port))
        except OSError:
            pass
        s.close()
""")


def is_scan(t: dict) -> bool:
    # The loader also reports raw sockets machine-wide: another suite's
    # hping3 running meanwhile is a CRITICAL raw_scan threat of its own.
    return t["level"] == "CRITICAL" and t["category"] == "port_scan"


def test_loader_to_analyzer_port_scan_is_one_critical_threat(tmp_path):
    loader, analyzer, records = start_pipeline(tmp_path)
    try:
        started = wait_for(lambda: read(records, "analyzer_status.json")["input"]["other_events"]
                           .get("startup"), timeout=60)
        assert started, loader.stderr.read1().decode(errors="replace") if loader.poll() else "no startup"
        scan = subprocess.run([sys.executable, "-c", SCANNER], timeout=60)
        assert scan.returncode == 0
        crit = wait_for(lambda: [t for t in pending(records) if is_scan(t)], timeout=15)
        assert crit, read(records, "dashboard_logs.json")
    finally:
        loader.send_signal(signal.SIGTERM)
        loader.wait(timeout=30)
        out, err = analyzer.communicate(timeout=30)
    assert analyzer.returncode == 0, err
    scans = [t for t in pending(records) if is_scan(t)]
    assert len(scans) == 1, scans
    (t,) = scans
    assert t["target"] == "127.0.0.2" and t["category"] == "port_scan"
    assert t["event"]["daddr"] == "127.0.0.2" and t["event"]["comm"].startswith("python")
    assert t["count"] == 30 - 14   # from the 15th port on
    status = read(records, "analyzer_status.json")
    assert status["input"]["invalid_lines"] == 0
    assert status["input"]["other_events"].get("shutdown") == 1
