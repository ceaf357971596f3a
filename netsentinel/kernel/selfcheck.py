"""`python -m netsentinel.kernel.selfcheck`: can BCC compile and load our BPF
programs on this kernel? Run by the install step; loads, attaches nothing."""

from __future__ import annotations

import os
import platform
import sys

from . import KernelError
from .enforcer import CGROUP_HOOKS, Enforcer
from .host import import_bcc
from .monitor import ConnectionMonitor


def main() -> int:
    try:
        bcc = import_bcc()
    except KernelError as e:
        print(f"selfcheck: {e}", file=sys.stderr)
        return 1
    build = os.path.realpath(f"/lib/modules/{platform.release()}/build")
    print(f"  kernel {platform.release()}, headers {build}")
    try:
        src, flags = ConnectionMonitor().source_and_flags("tracepoint")
        bcc.BPF(text=src, cflags=flags).cleanup()
        src, flags = Enforcer(None, max_bans=16).source_and_flags()
        b = bcc.BPF(text=src, cflags=flags)
        b.load_func(b"ns_xdp_filter", bcc.BPF.XDP)
        for name, attach_type in CGROUP_HOOKS:
            b.load_func(name.encode(), bcc.BPF.CGROUP_SOCK_ADDR, attach_type=attach_type)
        b.cleanup()
    except Exception as e:  # BCC raises bare Exception on compile/load errors
        print(f"selfcheck: {e}", file=sys.stderr)
        return 1
    print("  conn_monitor.bpf.c and enforce.bpf.c compile and pass the verifier")
    return 0


if __name__ == "__main__":
    sys.exit(main())
