"""Behaviour signals: what a process is doing, as opposed to which port it
talks to, that puts an event in front of the model even when a port rule
settled it (issue 14, "ask when it matters").

`common-service` settles every connection to 443, 53, 80, 22 or 8080 as
INFO, so under the default llm_scope a `python3 -c '...pty.spawn...'` to
port 443 was never shown to a model. The loader's evidence (its
`signals`: a shell whose stdin/stdout is a socket, a web-server or database
parent, and whatever it reports later) and a few facts read from the event
itself say that this connection deserves a second opinion:

  - writable_exe: the executable lives in a world-writable directory or
    was deleted after it started;
  - inline_code: a shell or interpreter runs code given on its command line
    (`bash -c`, `python3 -c`, `perl -e`, `php -r`, `node -e`, awk);
  - socket_in_cmdline: the command line opens a socket itself
    (`/dev/tcp/`, `/dev/udp/`, gawk's `/inet/tcp/`);
  - fetch_and_run: it downloads something and runs it;
  - mining: a stratum URL or mining options on the command line.

A signal only asks: the model may raise the rule's level, never lower it
(verdict.combine), and an event the rules already call CRITICAL is not
asked about (no answer could change it). Each signal is one line; the
prompt shows them to the model, fenced with the rest of the event
(prompt.describe), since parts of them (a parent's name, a path) are
chosen by whoever started the process.
"""

from __future__ import annotations

import os
import re

from ..levels import rank

MAX_SIGNALS = 8          # loader signals kept (a hostile producer could send many)

_WRITABLE_DIRS = ("/tmp/", "/var/tmp/", "/dev/shm/", "/run/shm/")
_DELETED = " (deleted)"
# Shells and interpreters (by the basename of argv[0], comm or exe), each
# with the flag letters that take code from the command line (`sh -e` is
# errexit, not code: the letters are per family).
_SHELL_LIKE = r"(?:(?:ba|da|z|k|mk|a|c|tc|fi)?sh|busybox|python[0-9.]*|pwsh)"


def _flags(letters: str) -> str:
    """A short option ending in one of `letters` (`-c`, `-lc`, `-e'...'`)."""
    return r"(?:^|\s)-[a-zA-Z]*[" + letters + r"](?=\s|'|\"|$)"


_INLINE = [(re.compile(f"^{name}$"), re.compile(flag)) for name, flag in (
    (_SHELL_LIKE, _flags("c") + r"|(?:^|\s)-(?:Command|EncodedCommand)\b"),
    (r"(?:perl[0-9.]*|ruby[0-9.]*|lua[0-9.]*|node|nodejs)", _flags("eE") + r"|--eval\b"),
    (r"php[0-9.]*", _flags("r")),
    (r"[gmn]?awk", r"\S"))]    # awk's program is always on its command line
_SOCKET_PATH = re.compile(r"/dev/(?:tcp|udp)/|/inet/(?:tcp|udp)/")
_FETCH = re.compile(r"\b(?:wget|curl|tftp|fetch|ftpget|urlopen|urlretrieve|Invoke-WebRequest)\b")
_RUN = re.compile(r"chmod\s+(?:[0-7]*7[0-7]*|[ugoa]*\+x)\b|\|\s*(?:ba|da)?sh\b|&&\s*\.?/|;\s*\.?/[\w.]|"
                  r"\b(?:ba|da)?sh\s+/(?:tmp|dev/shm|var/tmp)/|\bexec\s*\(")
_MINING = re.compile(r"stratum\+(?:tcp|ssl|tls)://|--donate-level|--coin[= ]|--currency[= ]monero|"
                     r"-a\s+(?:cryptonight|randomx|rx/0|sha256d|scrypt)\b|\b(?:supportxmr|minexmr|"
                     r"nanopool|nicehash|moneroocean|hashvault|c3pool|2miners|f2pool)\.", re.I)


def _names(ev: dict) -> set[str]:
    cmd = ev.get("cmdline") if isinstance(ev.get("cmdline"), str) else ""
    argv0 = cmd.split(None, 1)[0] if cmd.strip() else ""
    exe = (ev.get("exe") or "") if isinstance(ev.get("exe"), str) else ""
    comm = ev.get("comm") if isinstance(ev.get("comm"), str) else ""
    return {os.path.basename(x).lower() for x in (argv0, exe.removesuffix(_DELETED), comm) if x}


def behaviour_signals(ev: dict) -> dict[str, str]:
    """{name: one line} for one connection event; empty when nothing about
    the process itself stands out."""
    out: dict[str, str] = {}
    loader = ev.get("signals")
    if isinstance(loader, dict):
        for k, v in list(loader.items())[:MAX_SIGNALS]:
            if isinstance(k, str) and k:
                out[k[:64]] = str(v)[:200]
    exe = ev.get("exe") if isinstance(ev.get("exe"), str) else ""
    if exe.startswith(_WRITABLE_DIRS):
        out["writable_exe"] = f"the executable {exe} is in a world-writable directory"
    elif exe.endswith(_DELETED):
        out["writable_exe"] = f"the executable {exe} was deleted after it started"
    cmd = ev.get("cmdline") if isinstance(ev.get("cmdline"), str) else ""
    if cmd:
        inline = next((n for n in sorted(_names(ev)) for name, flag in _INLINE
                       if name.match(n) and flag.search(cmd)), None)
        if inline:
            out["inline_code"] = f"{inline} runs code given on its command line"
        if _SOCKET_PATH.search(cmd):
            out["socket_in_cmdline"] = "the command line opens a network socket itself " \
                                       "(/dev/tcp, /dev/udp or /inet/tcp)"
        if _FETCH.search(cmd) and _RUN.search(cmd):
            out["fetch_and_run"] = "the command line downloads something and runs it"
        if _MINING.search(cmd):
            out["mining"] = "a mining pool or mining options on the command line"
    return out


def asks_anyway(ev: dict, rule_level: str) -> dict[str, str]:
    """The signals that put a *settled* event to the model: all of them,
    unless the rules already said CRITICAL (nothing left to raise)."""
    if rank(rule_level) >= rank("CRITICAL"):
        return {}
    return behaviour_signals(ev)
