"""`python -m netsentinel.kernel.selfcheck`: can BCC compile and load our BPF
programs on this kernel, and does every map and program name netsentinel/abi.py
promises exist in them? Run by the install step; loads, attaches and pins nothing."""

from __future__ import annotations

import os
import platform
import sys

from .. import abi
from . import KernelError
from .enforcer import CGROUP_HOOKS, Enforcer
from .host import import_bcc
from .libbpf import ATTACH_CGROUP_INET_SOCK_CREATE
from .monitor import ConnectionMonitor


def _missing(bcc, bpf, maps, programs) -> list[str]:
    """ABI names absent from one compiled object (BCC knows its maps and
    functions by name before any program is loaded)."""
    lib = bcc.libbcc.lib
    funcs = {lib.bpf_function_name(bpf.module, i).decode()
             for i in range(lib.bpf_num_functions(bpf.module))}
    return ([f"map {m}" for m in maps if lib.bpf_table_fd(bpf.module, m.encode()) < 0]
            + [f"program {p}" for p in programs if p not in funcs])


def main() -> int:
    try:
        bcc = import_bcc()
    except KernelError as e:
        print(f"selfcheck: {e}", file=sys.stderr)
        return 1
    build = os.path.realpath(f"/lib/modules/{platform.release()}/build")
    print(f"  kernel {platform.release()}, headers {build}")
    missing = []
    try:
        for mode in ("tracepoint", "kprobe"):
            src, flags = ConnectionMonitor().source_and_flags(mode)
            b = bcc.BPF(text=src, cflags=flags)
            missing += [f"{m} ({mode})" for m in _missing(bcc, b, abi.MONITOR_MAPS, abi.MONITOR_PROGRAMS[mode])]
            b.cleanup()
        e = Enforcer(None, max_bans=16)
        src, flags = e.source_and_flags()
        b = bcc.BPF(text=src, cflags=flags)
        # Containment (kernel/contain.py): the fork/exit tracepoints are
        # compiled only when their format files were readable; notes say why not.
        tps = tuple(abi.CONTAIN_TRACEPOINTS) if "NS_TP_FORK_CHILD_PID" in e.contain_flags()[0] else ()
        for note in e.contain_flags()[1]:
            print(f"  note: {note}")
        missing += _missing(bcc, b, abi.ENFORCER_MAPS,
                            (abi.ENFORCER_XDP, *abi.ENFORCER_CGROUP, abi.ENFORCER_SOCK_CREATE,
                             abi.CONTAIN_SKB_PROG, *tps))
        b.load_func(abi.ENFORCER_XDP.encode(), bcc.BPF.XDP)
        for name, attach_type in CGROUP_HOOKS:
            b.load_func(name.encode(), bcc.BPF.CGROUP_SOCK_ADDR, attach_type=attach_type)
        b.load_func(abi.ENFORCER_SOCK_CREATE.encode(), bcc.BPF.CGROUP_SOCK,
                    attach_type=ATTACH_CGROUP_INET_SOCK_CREATE)
        b.load_func(abi.CONTAIN_SKB_PROG.encode(), bcc.BPF.CGROUP_SKB)
        for name in tps:
            b.load_func(name.encode(), bcc.BPF.TRACEPOINT)
        b.cleanup()
    except Exception as e:  # BCC raises bare Exception on compile/load errors
        print(f"selfcheck: {str(e).splitlines()[0] if str(e) else e!r}", file=sys.stderr)
        return 1
    if missing:
        print(f"selfcheck: names netsentinel/abi.py expects are missing from the BPF objects: "
              f"{', '.join(missing)}", file=sys.stderr)
        return 1
    print("  conn_monitor.bpf.c and enforce.bpf.c compile, pass the verifier and define every "
          "map and program netsentinel/abi.py names")
    return 0


if __name__ == "__main__":
    sys.exit(main())
