"""Process data that is not UTF-8 (a file named with bytes 0xff 0xfe) is
carried losslessly, as valid JSON, from /proc to the analyzer's records:
text with \\xNN escapes, plus NAME_b64 holding the raw bytes. A real
process with such a name is read by the loader's procinfo, written by the
real EventWriter under UTF-8 and ASCII text streams, and judged by the
analyzer; the kernel test runs the whole pipeline on a real scan."""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import signal
import subprocess

import jsonschema
import pytest

from analyzer_support import analyzer_env, conn, lines, pending, read, run_analyzer, start_pipeline, \
    wait_for
from netlab import kernel_test_skip_reason
from netsentinel.events import EventWriter, byte_exact, load_schema, text_of
from netsentinel.loader.procinfo import MAX_CMDLINE, read_process

BAD_NAME = b"scan\xff\xfe"


@pytest.fixture
def odd_binary(tmp_path):
    """A real executable (a copy of bash) whose file name is not UTF-8."""
    d = os.fsencode(tmp_path / "bin")
    os.mkdir(d)
    path = os.path.join(d, BAD_NAME)
    shutil.copy(shutil.which("bash"), path)
    return path


def start(binary: bytes, *args: bytes) -> subprocess.Popen:
    """binary -c 'sleep 30; true' ARGS... (at least one), once it runs as itself."""
    proc = subprocess.Popen([binary, b"-c", b"sleep 30; true", *args])
    # exe changes early in exec, argv a moment later: wait for both.
    assert wait_for(lambda: os.readlink(f"/proc/{proc.pid}/exe".encode()) == binary
                    and open(f"/proc/{proc.pid}/cmdline", "rb").read().endswith(args[-1] + b"\0"))
    return proc


def test_text_of_is_lossless_and_distinguishes_a_literal_backslash():
    assert text_of(b"/usr/bin/curl") == ("/usr/bin/curl", None)
    text, b64 = text_of(b"/tmp/scan\xff\xfe")
    assert text == "/tmp/scan\\xff\\xfe" and base64.b64decode(b64) == b"/tmp/scan\xff\xfe"
    # A file really named with a backslash, x, f, f: same text, no base64.
    assert text_of(b"/tmp/scan\\xff\\xfe") == ("/tmp/scan\\xff\\xfe", None)


def test_real_process_with_a_non_utf8_name_is_read_and_written_byte_exact(odd_binary):
    proc = start(odd_binary, b"--token=\xff")
    try:
        info = read_process(proc.pid)
    finally:
        proc.kill()
        proc.wait()
    assert info["proc_error"] is None
    assert os.fsencode(info["exe"]) == odd_binary
    schema = load_schema()
    for encoding in ("utf-8", "ascii"):
        raw = io.BytesIO()
        stream = io.TextIOWrapper(raw, encoding=encoding, errors="strict")
        w = EventWriter(stream)
        w.emit("connection", pid=proc.pid, tid=proc.pid, ppid=info["ppid"], uid=0,
               comm=BAD_NAME.decode("utf-8", "surrogateescape"), exe=info["exe"],
               cmdline=info["cmdline"], proc_error=None, family="ipv4", saddr="127.0.0.1",
               sport=None, daddr="127.0.0.2", dport=22, mode="tracepoint")
        w.emit("stats", connections=1)  # the stream goes on afterwards
        stream.flush()
        assert not w.broken and w.written == 2
        first, second = raw.getvalue().splitlines()
        ev = json.loads(first.decode("utf-8"))
        jsonschema.validate(ev, schema)
        assert ev["exe"].endswith("/scan\\xff\\xfe")
        assert base64.b64decode(ev["exe_b64"]) == odd_binary
        assert ev["comm"] == "scan\\xff\\xfe" and base64.b64decode(ev["comm_b64"]) == BAD_NAME
        assert "cmdline_b64" in ev, ev
        assert base64.b64decode(ev["cmdline_b64"]) == odd_binary + b" -c sleep 30; true --token=\xff"
        assert json.loads(second)["type"] == "stats"


def test_long_cmdline_is_capped_and_says_so(odd_binary):
    arg = "A" * (MAX_CMDLINE * 2)
    proc = start(odd_binary, arg.encode())
    try:
        info = read_process(proc.pid)
    finally:
        proc.kill()
        proc.wait()
    assert info["cmdline"].endswith(" more bytes not shown]")
    assert len(info["cmdline"]) < MAX_CMDLINE + 100


def test_stray_surrogates_anywhere_never_break_the_writer():
    raw = io.BytesIO()
    stream = io.TextIOWrapper(raw, encoding="utf-8", errors="strict")
    w = EventWriter(stream)
    w.emit("warning", message="model said \ud800", detail={"k\udcff": ["\ud800"]})
    stream.flush()
    ev = json.loads(raw.getvalue())
    assert ev["message"] == "model said \\ud800" and not w.broken
    assert byte_exact({"comm": "ok"}) == {"comm": "ok"}


def test_a_non_utf8_name_nested_in_an_event_is_escaped_not_the_event_dropped():
    """An unattributed egress event lists its candidate senders: one whose
    exe is not UTF-8 must not turn the event into an 'could not be encoded'
    warning (a scanner could hide its egress that way)."""
    raw = io.BytesIO()
    stream = io.TextIOWrapper(raw, encoding="utf-8", errors="strict")
    exe = (b"/tmp/" + BAD_NAME).decode("utf-8", "surrogateescape")
    EventWriter(stream).emit("egress", pid=None, comm=None, exe=None, attribution=None,
                             candidates=[{"pid": 4242, "comm": "scan", "exe": exe}])
    stream.flush()
    ev = json.loads(raw.getvalue())
    assert ev["type"] == "egress" and ev["candidates"] == [{"pid": 4242, "comm": "scan",
                                                            "exe": "/tmp/scan\\xff\\xfe"}]


def test_analyzer_judges_a_scan_by_a_non_utf8_exe(tmp_path):
    exe_text, exe_b64 = text_of(b"/tmp/" + BAD_NAME)
    events = [conn(i, pid=777, comm="scan\\xff\\xfe", comm_b64=base64.b64encode(BAD_NAME).decode(),
                   exe=exe_text, exe_b64=exe_b64, dport=20000 + i) for i in range(20)]
    records = tmp_path / "records"
    r = run_analyzer(tmp_path, ["--backend", "rules"], lines(events))
    assert r.returncode == 0, r.stderr
    status = read(records, "analyzer_status.json")
    assert status["input"]["invalid_lines"] == 0 and status["events_total"] == 20
    (t,) = [t for t in pending(records) if t["category"] == "port_scan"]
    assert t["event"]["exe"] == exe_text and base64.b64decode(t["event"]["exe_b64"]) == b"/tmp/" + BAD_NAME


def _stored(records, **where) -> list[dict] | None:
    """Connection entries in the analyzer's event store matching `where`."""
    from sqlite3 import Error
    from netsentinel.eventstore import Query, open_store
    try:
        db = open_store(str(records / "events.sqlite3"), readonly=True)
    except Error:
        return None   # not created yet
    try:
        return db.search(Query(kind="connection", **where))
    except Error:
        return None   # being written: not yet
    finally:
        db.close()


# ------------------------------------------------------------ the real thing
SKIP = kernel_test_skip_reason()
TARGET = "127.215.0.2"   # this helper's own loopback address: other tests scan elsewhere
OTHER = "127.215.0.3"


@pytest.mark.skipif(SKIP is not None, reason=str(SKIP))
def test_loader_to_analyzer_scan_by_a_non_utf8_binary_is_reported(tmp_path):
    """bash copied to a non-UTF-8 name scans 30 ports under a UTF-8 locale:
    the loader keeps emitting, the analyzer reports one CRITICAL port scan
    whose event names the exe (text and raw bytes)."""
    shell = os.path.join(os.fsencode(tmp_path), BAD_NAME)
    shutil.copy(shutil.which("bash"), shell)
    env = analyzer_env(tmp_path, LC_ALL="C.UTF-8", LANG="C.UTF-8")
    env.pop("PYTHONIOENCODING", None)
    loader, analyzer, records = start_pipeline(tmp_path, env)

    def scans():
        return [t for t in pending(records)
                if t["target"] == TARGET and t["category"] == "port_scan"]
    try:
        started = wait_for(lambda: read(records, "analyzer_status.json")["input"]["other_events"]
                           .get("startup"), timeout=60)
        assert started, "no startup event reached the analyzer"
        # It stays alive a moment after its last probe: the loader reads exe
        # from /proc at event time, and a process already gone has none.
        script = (f"for p in $(seq 21000 21029); do : 3<>/dev/tcp/{TARGET}/$p; done 2>/dev/null; "
                  "sleep 3; true")
        run = subprocess.run([shell, b"-c", script.encode()], timeout=60)
        assert run.returncode == 0
        assert wait_for(scans, timeout=20), read(records, "dashboard_logs.json")
        # The stream is still alive after the odd events: a later connection arrives too.
        subprocess.run([shutil.which("bash"), "-c", f": 3<>/dev/tcp/{OTHER}/21999"],
                       stderr=subprocess.DEVNULL, timeout=30)
        # Looked for in the history (the event store), not the dashboard's
        # window of recent entries: other work's connections on the machine
        # (the monitor sees every process's) can push it out of that window.
        assert wait_for(lambda: _stored(records, dst=OTHER, port=21999), timeout=60)
    finally:
        loader.send_signal(signal.SIGTERM)
        loader.wait(timeout=30)
        _, err = analyzer.communicate(timeout=30)
        loader_err = loader.stderr.read().decode(errors="replace")
    assert analyzer.returncode == 0, err
    assert "stdout closed" not in loader_err, loader_err
    (t,) = scans()
    assert t["level"] == "CRITICAL"
    assert base64.b64decode(t["event"]["exe_b64"]) == shell
    assert t["event"]["exe"] == text_of(shell)[0]
    assert t["event"]["comm"] == "scan\\xff\\xfe"
    status = read(records, "analyzer_status.json")
    assert status["input"]["invalid_lines"] == 0
