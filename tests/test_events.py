"""The event writer when its reader goes away: said once on stderr while the
loader runs (bans stay enforced), nothing said during the loader's own
shutdown, when the analyzer got the same Ctrl-C and left first."""

import io
import json

from netsentinel.events import EventWriter


class Gone(io.StringIO):
    def write(self, s):
        raise BrokenPipeError


def test_reader_gone_while_running_is_said_once(capsys):
    w = EventWriter(Gone())
    w.emit("warning", message="a")
    w.emit("warning", message="b")
    assert w.broken and capsys.readouterr().err.count("stdout closed (reader went away)") == 1


def test_reader_gone_during_shutdown_is_no_news(capsys):
    w = EventWriter(Gone())
    w.closing = True
    w.emit("shutdown", message="stopped")
    assert w.broken and capsys.readouterr().err == ""


def test_held_connection_events_are_written_whole_even_when_writes_come_up_short():
    """Under `python -u` stdout's buffer is the raw pipe: a large write (the
    held events of a poll, together) can be cut short by a signal. Every
    line must still arrive whole and in order."""
    from netsentinel.events import EventWriter

    class RawPipe:   # accepts at most 7 bytes per write, like an interrupted write(2)
        def __init__(self):
            self.data = bytearray()
        def write(self, b):
            chunk = bytes(b[:7])
            self.data += chunk
            return len(chunk)
        def flush(self):
            pass

    class Stdout:
        def __init__(self):
            self.buffer = RawPipe()
        def flush(self):
            pass

    out = Stdout()
    w = EventWriter(out)
    for i in range(20):
        w.hold("connection", pid=i, daddr="203.0.113.9", dport=443)
    assert out.buffer.data == b""   # held until the poll's flush
    w.emit("stats", events=20)      # an immediate event keeps the order
    lines = [json.loads(line) for line in out.buffer.data.decode().splitlines()]
    assert [e.get("pid") for e in lines] == list(range(20)) + [None]
    assert lines[-1]["type"] == "stats" and w.written == 21
