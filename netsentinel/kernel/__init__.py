"""Everything that needs root and BCC; the only package that imports bcc.

- host.py: tracefs/debugfs/bpffs/cgroup2 mounts, kprobe availability, import_bcc
- libbpf.py: ctypes bpf_link_create/update/detach, bpf_obj_pin/get, object info
- monitor.py: ConnectionMonitor (bpf/conn_monitor.bpf.c)
- outbound.py: OutboundMonitor (bpf/outbound.bpf.c): raw/packet sockets
- enforcer.py: Enforcer (bpf/enforce.bpf.c): load, then adopt or attach the links
- maps.py: the enforcer's maps: bans (with expiry), rules, counters, flows
- pins.py: the bpffs layout per interface, the one-loader lock, unload()
- selfcheck.py: `python -m netsentinel.kernel.selfcheck`, run by the install step

The constants and names both sides share come from bpf/netsentinel.h through
netsentinel/abi.py (the shared floor: it needs no bcc).

XDP and cgroup programs are attached as BPF links (libbpf's
bpf_link_create) and pinned in bpffs with the maps, so enforcement outlives
the loader, SIGKILL included; a new loader adopts the pins and swaps the
program through each link. Only `unified_ebpf.py --unload` detaches.
"""

from ..errors import NetSentinelError


class KernelError(NetSentinelError, RuntimeError):
    """A kernel feature could not be used; the message says what to do."""
