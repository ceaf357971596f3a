"""Is fd 0 or 1 of a process a TCP socket, and to where? Read from /proc:
/proc/PID/fd/{0,1} -> "socket:[INODE]", matched with the inode column of
/proc/PID/net/tcp{,6} (the process's own network namespace)."""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass

TCP_STATES = {"01": "ESTABLISHED", "02": "SYN_SENT", "03": "SYN_RECV", "04": "FIN_WAIT1",
              "05": "FIN_WAIT2", "06": "TIME_WAIT", "07": "CLOSE", "08": "CLOSE_WAIT",
              "09": "LAST_ACK", "0A": "LISTEN", "0B": "CLOSING"}
_SOCKET = re.compile(r"^socket:\[(\d+)\]$")


@dataclass
class TcpSocket:
    inode: str
    family: str
    saddr: str
    sport: int
    daddr: str
    dport: int
    state: str


def _endpoint(text: str) -> tuple[str, str, int]:
    """/proc/net/tcp's "0100007F:01BB" (or its 32-hex-digit IPv6 form) ->
    ("ipv4", "127.0.0.1", 443); IPv4-mapped IPv6 is reported as IPv4."""
    addr, port = text.split(":")
    raw = bytes.fromhex(addr)
    # Each 32-bit word is in host (little-endian) order.
    raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
    ip = ipaddress.ip_address(raw)
    if ip.version == 6 and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ("ipv6" if ip.version == 6 else "ipv4"), str(ip), int(port, 16)


def _hex_endpoint(text: str) -> str:
    family, ip, port = _endpoint(text)
    return f"[{ip}]:{port}" if family == "ipv6" else f"{ip}:{port}"


def tcp_sockets(pid: int, inodes: set[str]) -> dict[str, TcpSocket]:
    """The TCP sockets with these inodes, from the process's own namespace."""
    out: dict[str, TcpSocket] = {}
    for name in ("tcp", "tcp6"):
        try:
            with open(f"/proc/{pid}/net/{name}") as f:
                next(f, None)
                for line in f:
                    parts = line.split()
                    if len(parts) > 9 and parts[9] in inodes:
                        family, saddr, sport = _endpoint(parts[1])
                        _, daddr, dport = _endpoint(parts[2])
                        out[parts[9]] = TcpSocket(parts[9], family, saddr, sport, daddr, dport,
                                                  TCP_STATES.get(parts[3], parts[3]))
        except (OSError, ValueError):
            continue
    return out


def stdio_tcp(pid: int) -> tuple[list[int], TcpSocket] | None:
    """([fds among 0, 1], the TCP socket) when fd 0 or 1 of pid is one."""
    fds: dict[int, str] = {}
    for fd in (0, 1):
        try:
            m = _SOCKET.match(os.readlink(f"/proc/{pid}/fd/{fd}"))
        except OSError:
            continue
        if m:
            fds[fd] = m.group(1)
    if not fds:
        return None
    found = tcp_sockets(pid, set(fds.values()))
    hits = [(fd, found[ino]) for fd, ino in fds.items() if ino in found]
    if not hits:
        return None
    sock = hits[0][1]
    return [fd for fd, s in hits if s.inode == sock.inode], sock


def describe(fds: list[int], sock: TcpSocket) -> str:
    remote = f"[{sock.daddr}]:{sock.dport}" if sock.family == "ipv6" else f"{sock.daddr}:{sock.dport}"
    return f"fd {','.join(map(str, fds))} -> tcp {remote} ({sock.state})"


def stdio_socket(pid: int) -> str | None:
    """Evidence when fd 0 or 1 of pid is a TCP socket, else None."""
    hit = stdio_tcp(pid)
    return describe(*hit) if hit else None
