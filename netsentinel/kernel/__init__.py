"""Everything that needs root and BCC; the only package that imports bcc.

- host.py: tracefs/debugfs/bpffs/cgroup2 mounts, kprobe availability, import_bcc
- libbpf.py: ctypes bpf_link_create/detach, program ids
- monitor.py: ConnectionMonitor (bpf/conn_monitor.bpf.c)
- outbound.py: OutboundMonitor (bpf/outbound.bpf.c): raw/packet sockets
- enforcer.py: Enforcer (bpf/enforce.bpf.c): XDP + cgroup bans, rules, flows
- selfcheck.py: `python -m netsentinel.kernel.selfcheck`, run by the install step

XDP and cgroup programs are attached as BPF links (libbpf's
bpf_link_create): a link belongs to the process that holds its fd, so the
kernel detaches it if the loader dies in any way, SIGKILL included. A clean
exit detaches explicitly, once, and only what this process attached.
"""

from ..errors import NetSentinelError


class KernelError(NetSentinelError, RuntimeError):
    """A kernel feature could not be used; the message says what to do."""
