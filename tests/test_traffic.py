"""traffic.py as real processes on loopback: `serve` opens ports,
the generator's modes count open vs refused connects against them."""

from __future__ import annotations

import contextlib
import json
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = str(Path(__file__).resolve().parent.parent / "scripts" / "traffic.py")


def free_ports(n: int, host: str = "127.0.0.1") -> list[int]:
    """Ports nothing listens on right now (the kernel picks them)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    socks = []
    for _ in range(n):
        s = socket.socket(family, socket.SOCK_STREAM)
        s.bind((host, 0))
        socks.append(s)
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


@contextlib.contextmanager
def serving(ports: list[int], *extra: str):
    """`traffic.py serve` running until the block ends; yields
    (process, its 'listening on' line). The block's result check reads
    process.final_stdout after a clean SIGTERM exit."""
    proc = subprocess.Popen([sys.executable, SCRIPT, "serve", "--ports",
                             ",".join(map(str, ports)), *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        ready = proc.stdout.readline()
        assert ready.startswith("listening on "), (ready, proc.stderr.read())
        yield proc, ready.strip()
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=10)
        assert proc.returncode == 0, err
        proc.final_stdout = out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def generate(run_script, *args) -> dict:
    p = run_script("scripts/traffic.py", *args, "--json", timeout=120)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


def counts(mode: dict) -> tuple:
    return mode["attempted"], mode["open"], mode["refused"], mode["timeout"], mode["error"]


def test_normal_high_scan_against_served_ports(run_script):
    open_a, open_b, closed = free_ports(3)
    with serving([open_a, open_b], "--bind", "127.0.0.1") as (server, ready):
        assert ready == f"listening on 127.0.0.1:{open_a} 127.0.0.1:{open_b}"
        normal = generate(run_script, "normal", "--target", "127.0.0.1",
                          "--ports", f"{open_a},{closed},{open_b}")
        [m] = normal["modes"]
        assert normal["family"] == "ipv4" and normal["address"] == "127.0.0.1"
        assert m["mode"] == "normal" and m["ports"] == [open_a, closed, open_b]
        assert counts(m) == (3, 2, 1, 0, 0) and m["open_ports"] == [open_a, open_b]

        high = generate(run_script, "high", "--target", "127.0.0.1", "--ports", str(closed))
        assert counts(high["modes"][0]) == (1, 0, 1, 0, 0)

        # One process touching many distinct ports, the served ones among them.
        scan_ports = sorted({open_a, open_b, closed, *free_ports(20)})
        scan = generate(run_script, "scan", "--target", "127.0.0.1",
                        "--ports", ",".join(map(str, scan_ports)))
        [s] = scan["modes"]
        assert s["attempted"] == len(scan_ports) and s["open_ports"] == sorted([open_a, open_b])
        assert (s["open"], s["refused"], s["timeout"], s["error"]) == (2, len(scan_ports) - 2, 0, 0)
    # Every open connect reached the server (2 + 0 + 2).
    assert server.final_stdout.strip() == "serve: accepted 4 connections"


def test_default_mode_ports_on_loopback(run_script):
    """Without --ports each mode uses its documented ports; loopback answers
    every connect at once (open or refused, never a timeout)."""
    result = generate(run_script, "--all", "--target", "127.0.0.1")
    modes = {m["mode"]: m for m in result["modes"]}
    assert list(modes) == ["normal", "high", "scan"]
    assert modes["normal"]["ports"] == [80, 443, 53, 22]
    assert modes["high"]["ports"] == [23, 445, 3389]
    assert modes["scan"]["ports"] == list(range(1, 201))
    for m in modes.values():
        attempted, opened, refused, timeout, error = counts(m)
        assert attempted == len(m["ports"]) == opened + refused
        assert timeout == error == 0 and len(m["open_ports"]) == opened


def test_ipv6_target(run_script):
    try:
        [port] = free_ports(1, "::1")
    except OSError as e:
        pytest.skip(f"no IPv6 loopback here: {e.strerror}")
    [closed] = free_ports(1, "::1")
    with serving([port], "--bind", "::1") as (server, ready):
        assert ready == f"listening on [::1]:{port}"
        r = generate(run_script, "normal", "--target", "::1", "--ports", f"{port},{closed}")
        assert r["family"] == "ipv6" and r["address"] == "::1"
        assert counts(r["modes"][0]) == (2, 1, 1, 0, 0)
        r = generate(run_script, "high", "--target", "[::1]", "--ports", str(port))
        assert counts(r["modes"][0]) == (1, 1, 0, 0, 0)
    assert server.final_stdout.strip() == "serve: accepted 2 connections"


def test_serve_without_bind_takes_ipv4_and_ipv6(run_script):
    [port] = free_ports(1)
    with serving([port]) as (server, ready):
        for target in ("127.0.0.1", "::1"):
            r = generate(run_script, "normal", "--target", target, "--ports", str(port))
            assert counts(r["modes"][0]) == (1, 1, 0, 0, 0), target
    assert server.final_stdout.strip() == "serve: accepted 2 connections"


def test_human_summary_lines(run_script):
    [closed] = free_ports(1)
    p = run_script("scripts/traffic.py", "--all", "--ports", f"{closed}", "--target", "127.0.0.1")
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert [ln.split(":")[0] for ln in lines] == ["normal", "high", "scan"]
    for ln in lines:
        assert re.fullmatch(r"\w+: target=127\.0\.0\.1 attempted=1 open=0 refused=1 timeout=0 "
                            r"error=0 elapsed=[0-9.]+s", ln), ln


def test_serve_stops_cleanly_on_sigint():
    [port] = free_ports(1)
    proc = subprocess.Popen([sys.executable, SCRIPT, "serve", "--ports", str(port), "--bind",
                             "127.0.0.1"], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().startswith("listening on ")
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=10)
        assert proc.returncode == 0 and out.strip() == "serve: accepted 1 connections"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def test_serve_on_a_busy_port_fails_in_one_line(run_script):
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    try:
        port = busy.getsockname()[1]
        p = run_script("scripts/traffic.py", "serve", "--ports", str(port), "--bind", "127.0.0.1")
        assert p.returncode == 1 and p.stdout == ""
        assert p.stderr.strip() == (f"traffic.py: error: cannot listen on "
                                    f"127.0.0.1:{port}: Address already in use")
    finally:
        busy.close()


@pytest.mark.parametrize("args, words", [
    ([], "give one mode"),
    (["normal", "--all"], "give one mode"),
    (["flood"], "invalid choice: 'flood'"),
    (["scan", "--ports", "200-1"], "bad port list '200-1'"),
    (["scan", "--ports", "1-70000"], "outside 1-65535"),
    (["scan", "--ports", "22,ssh"], "'ssh' is not a port or a range"),
    (["normal", "--target", "no-such-host.invalid"], "cannot resolve target"),
    (["normal", "--timeout", "0"], "--timeout must be > 0"),
    (["serve"], "serve needs --ports"),
])
def test_bad_input_exit_2_one_line(run_script, args, words):
    p = run_script("scripts/traffic.py", *args)
    assert p.returncode == 2 and p.stdout == ""
    lines = p.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("traffic.py: error: ")
    assert words in lines[0]


def test_help_has_examples(run_script):
    h = run_script("scripts/traffic.py", "--help")
    assert h.returncode == 0
    assert "sudo ip netns exec lab python3 scripts/traffic.py serve --ports 22,80,443" in h.stdout
    assert "python3 scripts/traffic.py scan --target 10.200.0.2" in h.stdout
