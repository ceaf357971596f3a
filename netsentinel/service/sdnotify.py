"""sd_notify(3) without libsystemd: one datagram to $NOTIFY_SOCKET.

systemd sets NOTIFY_SOCKET for a Type=notify service; elsewhere (a terminal,
a container without systemd) it is unset and notify() does nothing. A name
starting with '@' is an abstract socket. A failure to send is reported by the
caller once, never fatal: readiness is a courtesy to systemd, enforcement
does not wait on it.
"""

from __future__ import annotations

import os
import socket


def notify_socket_address(value: str | None = None) -> str | bytes | None:
    value = os.environ.get("NOTIFY_SOCKET") if value is None else value
    if not value:
        return None
    if value.startswith("@"):
        return b"\0" + value[1:].encode()  # abstract namespace
    return value


def notify(*assignments: str, address: str | bytes | None = None) -> bool:
    """Send "READY=1", "STATUS=...", ... as one datagram. True when sent,
    False when there is no socket to send to; OSError when sending failed."""
    addr = address if address is not None else notify_socket_address()
    if addr is None:
        return False
    payload = "\n".join(assignments).encode()
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
        s.sendto(payload, addr)
    return True
