"""The event writer when its reader goes away: said once on stderr while the
loader runs (bans stay enforced), nothing said during the loader's own
shutdown, when the analyzer got the same Ctrl-C and left first."""

import io

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
