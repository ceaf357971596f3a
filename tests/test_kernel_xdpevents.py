"""The XDP program's ring buffer outlives the loader (it is pinned, so an
adopted program keeps writing to it): what it wrote while no loader ran is
old news and is dropped at start, never reported as if it were happening now
(a rate limit for a flood long over)."""

from __future__ import annotations

import subprocess

import pytest

from netlab import (lab,  # noqa: F401  (module-scoped fixture)
                    LoaderProc, kernel_test_skip_reason, stop_loader, validate)

SKIP = kernel_test_skip_reason()
pytestmark = pytest.mark.skipif(SKIP is not None, reason=str(SKIP))

ARGS = ("--agg-udp-pps", "100", "--flow-interval", "0.5")


def udp(lab, port: int) -> None:
    subprocess.run(["ip", "netns", "exec", lab.peer, "hping3", "-q", "--udp", "-k", "-p", str(port),
                    "-c", "600", "-i", "u1000", lab.dut4], capture_output=True, timeout=30)


def test_records_written_while_no_loader_ran_are_dropped_at_start(lab, tmp_path):
    cfg = tmp_path / "filter_config.json"
    cfg.write_text("{}")
    first = LoaderProc(lab, tmp_path, cfg, *ARGS)
    validate(first.wait_started())
    assert first.stop() == 0                      # enforcement (and the ring buffer) stay
    udp(lab, 5500)                                # the kernel reports it; nobody reads
    second = LoaderProc(lab, tmp_path, cfg, *ARGS)
    try:
        validate(second.wait_started())
        udp(lab, 5501)                            # now, with a loader
        ev = validate(second.wait_for(lambda e: e["type"] == "flow_aggregate" and e["dport"] == 5501, 10,
                                      "the live flood's flow_aggregate"))
        assert ev["kind"] == "udp" and ev["pps"] >= 100
        old = [e for e in second.all_events if e["type"] == "flow_aggregate" and e["dport"] == 5500]
        assert old == [], f"records from before the start were reported: {old}"
    finally:
        stop_loader(lab, second)
