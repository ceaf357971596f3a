"""Stack visibility: bpf/stack.bpf.c on the skb:kfree_skb tracepoint.

Drop reasons are named as the kernel names them, read from the tracepoint's
own format file (its print fmt maps each enum value to its name), so a
kernel with new reasons needs no change here. Drop locations are symbolised
from /proc/kallsyms. Per-device and per-address counting needs sk_buff
offsets from this kernel's BTF (kernel/btf.py); without them that part is
off and `detail_off_reason` says why.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import threading
from pathlib import Path

from . import KernelError
from .batchread import BatchReader
from .btf import ACCEPT_OFFSETS, PATH_OFFSETS, BTFError, offsets, rcvq_offsets, stack_offsets
from ..abi import cflags
from .host import import_bcc, program_source
from .stacknames import Symbols, drop_reason_names  # noqa: F401  (drop_reason_names: for tests)

TRACEFS = Path("/sys/kernel/tracing")
KFREE_SKB_FORMAT = TRACEFS / "events/skb/kfree_skb/format"
MAX_SITES = 4096
MAX_FLOWS = 16384
MAX_CONNS = 16384
MAX_ACCEPTS = 8192   # (client, local address, port) pairs per interval; more are counted as missed
MAX_PATH_SKBS = 8192     # packets in flight between two path hooks (LRU)
MAX_PATH_EDGES = 8192    # (flow, hook, next hook) edges per interval; more are counted as missed
MAX_CLOSED = 8192        # connections closed since the last read
# The fields of a struct ns_tcp_health that pick the rows to report (read_tcp_light).
TCP_LIGHT = ("first_ns", "last_ns", "probes", "retransmits", "closed", "netns")
MAX_RCVQ_SOCKS = 4096   # sockets with a full receive queue per interval
MISS_NAMES = ("sites_full", "flows_full", "accepts_full", "path_full", "tcp_closed_full", "rcvq_full",
              "tcp_quiet_closed")
# Drop reasons that mean the socket had no room for the packet: its receive
# buffer, its backlog, the protocol's memory, or (TCP) a zero window because
# the reader does not read.
FULL_QUEUE_REASONS = ("SOCKET_RCVBUFF", "SOCKET_BACKLOG", "PROTO_MEM", "TCP_ZEROWINDOW")
# The bpf/ files compiled as one program, in this order (see stack.bpf.c).
SOURCES = ("stack.bpf.c", "stack_path.bpf.c", "stack_tcp.bpf.c", "stack_drops.bpf.c")
PATH_TRACEPOINTS = (("net", "netif_receive_skb"), ("skb", "skb_copy_datagram_iovec"), ("skb", "consume_skb"))
ACCEPT_TRACEPOINTS = (("syscalls", "sys_exit_accept4"), ("syscalls", "sys_exit_accept"))
TCP_TRACEPOINTS = (("sock", "inet_sock_set_state"), ("tcp", "tcp_probe"), ("tcp", "tcp_retransmit_skb"),
                   ("tcp", "tcp_send_reset"), ("tcp", "tcp_receive_reset"))
# BPF_TCP_* (UAPI linux/bpf.h), the kernel's TCP state numbers.
TCP_STATES = {1: "ESTABLISHED", 2: "SYN_SENT", 3: "SYN_RECV", 4: "FIN_WAIT1", 5: "FIN_WAIT2",
              6: "TIME_WAIT", 7: "CLOSE", 8: "CLOSE_WAIT", 9: "LAST_ACK", 10: "LISTEN",
              11: "CLOSING", 12: "NEW_SYN_RECV"}
STATE_LOG = 8
# NS_HOOK_* (bpf/stack.h): the path's hooks, in the order a packet meets them.
HOOKS = ("start", "receive", "tcp", "socket", "consumed", "dropped")
HOOK_DROPPED = 5

def own_netns() -> int:
    """The inode of this process's network namespace (what the stack
    program compares a device's namespace with)."""
    return os.stat("/proc/self/ns/net").st_ino


def _addr(family: int, raw: bytes) -> str:
    return str(ipaddress.IPv4Address(raw[:4]) if family == 4 else ipaddress.IPv6Address(raw[:16]))


class StackProbe:
    """Loads bpf/stack.bpf.c and hands out per-interval drop counts."""

    def __init__(self):
        # Parts this kernel cannot do are off; the reasons are kept here for
        # the caller to say (detail_off_reason, tcp_off_reason).
        self.bpf = None
        self._readers: dict[str, BatchReader] = {}   # per map, for this self.bpf
        self.reasons: dict[int, str] = {}
        self.symbols: Symbols | None = None
        self.detail_off_reason: str | None = None
        self.tcp_off_reason: str | None = None
        self.path_off_reason: str | None = None
        self.accept_off_reason: str | None = None
        self.rcvq_off_reason: str | None = None
        self.rcvq = False
        self._format = ""
        self.want_path = False   # --stack-path (off by default: its cost is per packet)

    def start(self) -> None:
        bcc = import_bcc()
        if not bcc.BPF.tracepoint_exists("skb", "kfree_skb"):
            raise KernelError("this kernel has no skb:kfree_skb tracepoint: drop reasons are off")
        try:
            self._format = KFREE_SKB_FORMAT.read_text()
            self.reasons = drop_reason_names(self._format)
        except OSError as e:
            raise KernelError(f"cannot read {KFREE_SKB_FORMAT}: {e.strerror}; mount tracefs") from e
        if not self.reasons:
            raise KernelError("kfree_skb has no drop reasons on this kernel (before 5.17): "
                              "drop reasons are off")
        extra = {"NS_MAX_SITES": MAX_SITES, "NS_MAX_FLOWS": MAX_FLOWS, "NS_OWN_NETNS": own_netns()}
        missing = [f"{c}:{e}" for c, e in TCP_TRACEPOINTS if not bcc.BPF.tracepoint_exists(c, e)]
        if missing:
            self.tcp_off_reason = f"TCP health is off: this kernel lacks {', '.join(missing)}"
        else:
            extra.update(NS_STACK_TCP=1, NS_MAX_CONNS=MAX_CONNS, NS_MAX_ACCEPTS=MAX_ACCEPTS,
                         NS_MAX_CLOSED=MAX_CLOSED)
        self.rcvq = bcc.BPF.tracepoint_exists("sock", "sock_rcvqueue_full")
        if self.rcvq:
            extra["NS_STACK_RCVQ"] = 1
        extra.update(self._btf_parts(bcc))
        self.symbols = Symbols()
        text = "\n".join(program_source(name) for name in SOURCES)
        self.bpf = bcc.BPF(text=text, cflags=cflags(max_bans=1, extra=extra))

    def _btf_parts(self, bcc) -> dict[str, int]:
        """-D flags of the parts that read kernel structs (offsets from this
        kernel's BTF); each part it cannot do gets its off reason."""
        try:
            extra = {**stack_offsets(), "NS_HAVE_SKB_OFFSETS": 1}
        except (BTFError, OSError, ValueError) as e:
            self.detail_off_reason = f"per-device and per-address drops are off: {e}"
            self.path_off_reason = f"the per-flow path is off: {e}"
            self.accept_off_reason = f"the process of accepted connections is off: {e}"
            self.rcvq_off_reason = f"full receive queues per socket are off: {e}"
            return {}
        missing = [f"{c}:{e}" for c, e in PATH_TRACEPOINTS if not bcc.BPF.tracepoint_exists(c, e)]
        try:
            if not self.want_path:
                raise BTFError("not asked for (--stack-path turns it on; it costs about 1.3 µs "
                               "per received packet, docs/STACK.md)")
            if missing:
                raise BTFError(f"this kernel lacks {', '.join(missing)}")
            extra.update(offsets(PATH_OFFSETS), NS_STACK_PATH=1,
                         NS_MAX_PATH_SKBS=MAX_PATH_SKBS, NS_MAX_PATH_EDGES=MAX_PATH_EDGES)
        except BTFError as e:
            self.path_off_reason = f"the per-flow path is off: {e}"
        missing = [f"{c}:{e}" for c, e in ACCEPT_TRACEPOINTS if not bcc.BPF.tracepoint_exists(c, e)]
        try:
            if self.tcp_off_reason:
                raise BTFError("TCP health is off")
            if missing:
                raise BTFError(f"this kernel lacks {', '.join(missing)} (CONFIG_FTRACE_SYSCALLS)")
            extra.update(offsets(ACCEPT_OFFSETS), NS_STACK_ACCEPT=1)
        except BTFError as e:
            self.accept_off_reason = f"the process of accepted connections is off: {e}"
        try:
            if not self._format or "rx_sk;" not in self._format:
                raise BTFError("this kernel's skb:kfree_skb names no socket (rx_sk, Linux 6.12+)")
            value = {name: v for v, name in self.reasons.items()}
            extra.update(rcvq_offsets(), NS_STACK_RCVQ_SOCK=1, NS_MAX_RCVQ_SOCKS=MAX_RCVQ_SOCKS,
                         **{f"NS_RCVQ_REASON_{i}": value.get(n, 0) for i, n in enumerate(FULL_QUEUE_REASONS)})
        except BTFError as e:
            self.rcvq_off_reason = f"full receive queues per socket are off: {e}"
        return extra

    def reason_name(self, value: int) -> str:
        return self.reasons.get(value, f"REASON_{value}")

    def _drain_raw(self, name: str) -> list[tuple[object, object]]:
        """Entries read and deleted in one go (the kernel's batch
        lookup-and-delete holds each bucket's lock: no increment is lost)."""
        table = self.bpf[name]
        try:
            return list(table.items_lookup_and_delete_batch())
        except Exception:  # kernels without batch ops (before 5.6): read, then delete
            got = list(table.items())
            for k, _ in got:
                table.pop(k, None)
            return got

    def _drain(self, name: str) -> list[tuple[object, int]]:
        # BCC hands out plain ints from batch reads, ctypes values otherwise.
        return [(k, int(getattr(v, "value", v))) for k, v in self._drain_raw(name)]

    def read_sites(self) -> list[dict]:
        out = []
        for k, n in self._drain("drop_sites"):
            out.append({"reason": self.reason_name(k.reason), "location": self.symbols.name(k.location),
                        "ifindex": k.ifindex or None, "netns": k.netns or None, "count": n})
        return out

    def read_flows(self) -> list[dict]:
        out = []
        for k, n in self._drain("drop_flows_own") + self._drain("drop_flows"):
            raw_s, raw_d = bytes(k.saddr), bytes(k.daddr)
            out.append({"reason": self.reason_name(k.reason), "family": f"ipv{k.family}",
                        "proto": k.proto, "src": _addr(k.family, raw_s), "dst": _addr(k.family, raw_d),
                        "dport": k.dport or None, "tcp_flags": k.tcp_flags if k.proto == 6 else None,
                        "netns": k.netns or None, "count": n})
        return out

    def read_misses(self) -> dict[str, int]:
        t = self.bpf["stack_misses"]
        out = {}
        for i, name in enumerate(MISS_NAMES):
            out[name] = int(sum(t[t.Key(i)]))
        return out

    def read_rcvq_full(self) -> int | None:
        """sock:sock_rcvqueue_full hits since load; None without the tracepoint."""
        if not self.rcvq:
            return None
        t = self.bpf["rcvq_full"]
        return int(sum(t[t.Key(0)]))

    def read_rcvq(self) -> list[dict]:
        """Sockets that had no room for a packet since the last read, drained:
        drops, memory at the last drop, owner (uid, inode) and the last
        dropped packet's flow (its destination is the socket's end)."""
        if self.rcvq_off_reason is not None:
            return []
        out = []
        for k, q in self._drain_raw("rcvq_socks"):
            p = q.pkt
            fam = p.family or 4
            out.append({"sk": int(getattr(k, "value", k)), "inode": q.inode or None, "uid": q.uid,
                        "drops": q.drops, "rmem_alloc": q.rmem_alloc, "rcvbuf": q.rcvbuf, "truesize": q.truesize,
                        "reason": self.reason_name(q.reason), "netns": q.netns or None,
                        "family": f"ipv{fam}", "proto": p.proto, "local": _addr(fam, bytes(p.daddr)),
                        "port": p.dport, "src": _addr(fam, bytes(p.saddr)), "sport": p.sport,
                        "first_ns": q.first_ns, "last_ns": q.last_ns})
        return out

    def read_accepts(self) -> list[dict]:
        """Handshakes completed on this host's listeners since the last read,
        per (client, local address, port), drained."""
        if self.tcp_off_reason is not None:
            return []
        out = []
        for k, n in self._drain("accepts"):
            out.append({"src": _addr(k.family, bytes(k.raddr)), "dst": _addr(k.family, bytes(k.laddr)),
                        "family": f"ipv{k.family}", "port": k.lport, "count": n})
        return out

    def read_tcp(self) -> list[dict]:
        """Every tracked connection, whole; closed ones are deleted once read
        (this is their final report)."""
        return [self.tcp_details(r) for r in self.read_tcp_light()]

    def read_tcp_light(self) -> list[dict]:
        """Every tracked connection with only what picks the ones to report
        (key, closed, netns, segments_in, retransmits, first_ns, last_ns);
        tcp_details() adds the rest to those picked. A connect flood leaves
        thousands of closed sockets an interval: reading each as a ctypes
        object, and formatting each, was most of the loader's CPU
        (docs/benchmarks.md §3): the maps are read raw (batchread), the
        whole entry kept as bytes. Closed ones are deleted once read."""
        if self.tcp_off_reason is not None:
            return []
        out = []
        for name, live_map in (("tcp_conns", True), ("tcp_closed", False)):
            reader = self._readers.get(name)
            if reader is None:
                reader = self._readers[name] = BatchReader(self.bpf[name], TCP_LIGHT, ("sk",))
            n = reader.read(delete=not live_map)
            stale = []
            for i, ((sk,), v) in enumerate(zip(reader.keys(), reader.values())):
                first_ns, last_ns, probes, retransmits, closed, netns = v
                out.append({"key": (sk, first_ns), "closed": bool(closed), "netns": netns or None,
                            "segments_in": probes, "retransmits": retransmits,
                            "first_ns": first_ns, "last_ns": last_ns,
                            "_h": (reader.Leaf, reader.leaf_bytes(i))})
                if closed and live_map:   # a closed one left here (tcp_closed was full): reported now
                    stale.append(sk)
            if n and stale:
                table = self.bpf[name]
                for sk in stale:
                    try:
                        del table[table.Key(sk)]
                    except KeyError:
                        pass   # the kernel's LRU (or tcp_closed's move) took it meanwhile
        return out

    @staticmethod
    def tcp_details(r: dict) -> dict:
        """A read_tcp_light() row made whole (in place)."""
        h = r.pop("_h", None)
        if h is None:
            return r
        if isinstance(h, tuple):   # (its type, its bytes) from read_tcp_light
            h = h[0].from_buffer_copy(h[1])
        fam = 6 if h.family == socket.AF_INET6 else 4
        n = h.state_changes
        r.update({
            "family": f"ipv{fam}", "saddr": _addr(fam, bytes(h.saddr)),
            "sport": h.sport, "daddr": _addr(fam, bytes(h.daddr)), "dport": h.dport,
            "state": TCP_STATES.get(h.state, str(h.state)), "inbound": bool(h.inbound),
            "pid": h.pid or None, "uid": h.uid if h.pid else None,
            "comm": h.comm.decode("utf-8", "replace") if h.pid else None,
            "srtt_us": h.srtt_us, "cwnd": h.cwnd, "ssthresh": h.ssthresh,
            "rst_sent": h.rst_sent, "rst_recv": h.rst_recv, "queue_drops": h.queue_drops,
            "state_changes": n,
            "states": [(TCP_STATES.get(h.states[i % STATE_LOG], str(h.states[i % STATE_LOG])),
                        h.state_ns[i % STATE_LOG]) for i in range(max(0, n - STATE_LOG), n)]})
        return r

    def read_path(self) -> list[dict]:
        """Path edges since the last read, drained: one row per (flow,
        hook, next hook[, drop reason]) with its count and latency histogram."""
        if self.path_off_reason is not None:
            return []
        out = []
        for k, e in self._drain_raw("path_edges"):
            out.append({"family": f"ipv{k.family}", "proto": k.proto,
                        "src": _addr(k.family, bytes(k.saddr)), "sport": k.sport,
                        "dst": _addr(k.family, bytes(k.daddr)), "dport": k.dport, "netns": k.netns or None,
                        "from": getattr(k, "from"), "to": k.to,
                        "reason": self.reason_name(k.reason) if k.to == HOOK_DROPPED else None,
                        "count": e.count, "sum_ns": e.sum_ns, "hist": list(e.hist)})
        return out

    def stop(self) -> None:
        if self.bpf is None:
            return
        try:
            # Each tracepoint detach waits for an RCU grace period (~75 ms
            # here); six in a row kept a restarting loader's bans down that
            # much longer. In parallel they overlap.
            detach = [threading.Thread(target=self.bpf.detach_tracepoint, args=(tp,), daemon=True)
                      for tp in list(self.bpf.tracepoint_fds)]
            for t in detach:
                t.start()
            for t in detach:
                t.join()
            self.bpf.cleanup()   # whatever is left (a failed detach is retried here)
        finally:
            self.bpf = None
            self._readers = {}
