/* stack.bpf.c - where the stack drops packets, and why.
 *
 * Tracepoint skb:kfree_skb (stable format: location, reason). Every drop is
 * counted in kernel maps, read and emptied by the loader on an interval
 * (netsentinel/loader/stack.py): never an event per packet, so a flood of
 * drops costs a map update each, not a perf-buffer record.
 *
 * The device and the packet's addresses are not in the tracepoint; they are
 * read from the skb at offsets taken from the running kernel's BTF, passed as
 * -D flags (netsentinel/kernel/btf.py). Without them (NS_HAVE_SKB_OFFSETS
 * undefined) only reason x location is counted.
 */
#include <uapi/linux/ip.h>
#include <uapi/linux/ipv6.h>
#include <uapi/linux/in.h>
#include "stack.h"

#define NS_AF_INET6 10

/* The tracepoint's `reason` field is typed `enum skb_drop_reason`, which no
 * UAPI header defines; BCC builds the args struct from the format file, so
 * give the enum a body (4 bytes, as the format says) without its values:
 * their names are read from the same format file by the loader. */
enum skb_drop_reason { NS_SKB_DROP_REASON_OPAQUE = 0 };
/* Same for tcp:tcp_send_reset's `reason` (enum sk_rst_reason, unused here). */
enum sk_rst_reason { NS_SK_RST_REASON_OPAQUE = 0 };

/* Reasons below this are "not dropped yet" / "consumed": not drops. */
#define NS_FIRST_DROP_REASON 2

BPF_HASH(drop_sites, struct ns_drop_site, u64, NS_MAX_SITES);
BPF_HASH(drop_flows, struct ns_drop_flow, u64, NS_MAX_FLOWS);
BPF_PERCPU_ARRAY(stack_misses, u64, NS_MISS_SLOTS);

static __always_inline void ns_miss(u32 slot)
{
    u64 *v = stack_misses.lookup(&slot);
    if (v)
        (*v)++;
}


/* Add one to a counter; on first sight insert it. BCC map calls cannot sit
 * in a macro, hence one copy per map. */
static __always_inline void ns_bump_site(struct ns_drop_site *key)
{
    u64 one = 1, *v = drop_sites.lookup(key);
    if (v) {
        __sync_fetch_and_add(v, 1);
    } else if (drop_sites.insert(key, &one) != 0) {
        v = drop_sites.lookup(key);     /* another CPU inserted it first ... */
        if (v)
            __sync_fetch_and_add(v, 1);
        else
            ns_miss(NS_MISS_SITES_FULL); /* ... or the map is full */
    }
}

static __always_inline void ns_bump_flow(struct ns_drop_flow *key)
{
    u64 one = 1, *v = drop_flows.lookup(key);
    if (v) {
        __sync_fetch_and_add(v, 1);
    } else if (drop_flows.insert(key, &one) != 0) {
        v = drop_flows.lookup(key);
        if (v)
            __sync_fetch_and_add(v, 1);
        else
            ns_miss(NS_MISS_FLOWS_FULL);
    }
}

#ifdef NS_HAVE_SKB_OFFSETS
static __always_inline void ns_flow(void *skb, struct ns_drop_flow *f)
{
    unsigned char *head = 0;
    u16 nh = 0;
    bpf_probe_read_kernel(&head, sizeof(head), skb + NS_SKB_HEAD);
    bpf_probe_read_kernel(&nh, sizeof(nh), skb + NS_SKB_NETWORK_HEADER);
    if (!head || nh == (u16)~0U)
        return;             /* no network header set (e.g. dropped before L3) */
    u8 first = 0;
    if (bpf_probe_read_kernel(&first, 1, head + nh) != 0)
        return;
    u32 l4 = 0;
    if ((first >> 4) == 4) {
        struct iphdr ip = {};
        if (bpf_probe_read_kernel(&ip, sizeof(ip), head + nh) != 0)
            return;
        f->family = 4;
        f->proto = ip.protocol;
        __builtin_memcpy(f->saddr, &ip.saddr, 4);
        __builtin_memcpy(f->daddr, &ip.daddr, 4);
        l4 = nh + ip.ihl * 4;
    } else if ((first >> 4) == 6) {
        struct ipv6hdr ip6 = {};
        if (bpf_probe_read_kernel(&ip6, sizeof(ip6), head + nh) != 0)
            return;
        f->family = 6;
        f->proto = ip6.nexthdr;   /* extension headers: port left 0 */
        __builtin_memcpy(f->saddr, &ip6.saddr, 16);
        __builtin_memcpy(f->daddr, &ip6.daddr, 16);
        l4 = nh + sizeof(ip6);
    } else {
        return;
    }
    if (f->proto == IPPROTO_TCP || f->proto == IPPROTO_UDP) {
        u16 ports[2] = {};
        if (bpf_probe_read_kernel(ports, sizeof(ports), head + l4) == 0)
            f->dport = ntohs(ports[1]);
    }
    /* The flags tell a probe (SYN, FIN/NULL/Xmas) from backscatter (RST, SYN-ACK). */
    if (f->proto == IPPROTO_TCP)
        bpf_probe_read_kernel(&f->tcp_flags, 1, head + l4 + 13);
}
#endif

TRACEPOINT_PROBE(skb, kfree_skb)
{
    u32 reason = args->reason;
    if (reason < NS_FIRST_DROP_REASON)
        return 0;
    struct ns_drop_site site = {};
    site.location = (u64)args->location;
    site.reason = reason;
#ifdef NS_HAVE_SKB_OFFSETS
    void *skb = (void *)args->skbaddr;
    void *dev = 0;
    bpf_probe_read_kernel(&dev, sizeof(dev), skb + NS_SKB_DEV);
    if (dev) {
        void *net = 0;
        bpf_probe_read_kernel(&site.ifindex, sizeof(site.ifindex), dev + NS_DEV_IFINDEX);
        bpf_probe_read_kernel(&net, sizeof(net), dev + NS_DEV_ND_NET);
        if (net)
            bpf_probe_read_kernel(&site.netns, sizeof(site.netns), net + NS_NET_INUM);
    }
    struct ns_drop_flow flow = {};
    ns_flow(skb, &flow);
    if (flow.family) {
        flow.reason = reason;
        flow.netns = site.netns;
        ns_bump_flow(&flow);
    }
#endif
    ns_bump_site(&site);
    return 0;
}

/* ---------------------------------------------------------------- TCP health
 * Entries are made on a TCP state change (so only for real connections, not
 * listeners) and updated by the per-connection tracepoints; the loader
 * reads them each interval and deletes the closed ones after their final
 * report. LRU: a host with more connections than NS_MAX_CONNS loses the
 * least recently active, never a new one. */
#ifdef NS_STACK_TCP
BPF_TABLE("lru_hash", u64, struct ns_tcp_health, tcp_conns, NS_MAX_CONNS);
BPF_PERCPU_ARRAY(tcp_zero, struct ns_tcp_health, 1);
BPF_HASH(accepts, struct ns_accept_key, u64, NS_MAX_ACCEPTS);

static __always_inline void ns_bump_accept(struct ns_accept_key *key)
{
    u64 one = 1, *v = accepts.lookup(key);
    if (v) {
        __sync_fetch_and_add(v, 1);
    } else if (accepts.insert(key, &one) != 0) {
        v = accepts.lookup(key);
        if (v)
            __sync_fetch_and_add(v, 1);
        else
            ns_miss(NS_MISS_ACCEPTS_FULL);
    }
}

TRACEPOINT_PROBE(sock, inet_sock_set_state)
{
    if (args->protocol != IPPROTO_TCP)
        return 0;
    int ns = args->newstate;
    if (args->oldstate == BPF_TCP_SYN_RECV && ns == BPF_TCP_ESTABLISHED) {
        /* An accepted socket: its source side is local, its destination the client. */
        struct ns_accept_key a = {};
        a.lport = args->sport;
        if (args->family == NS_AF_INET6) {
            a.family = 6;
            __builtin_memcpy(a.raddr, args->daddr_v6, 16);
            __builtin_memcpy(a.laddr, args->saddr_v6, 16);
        } else {
            a.family = 4;
            __builtin_memcpy(a.raddr, args->daddr, 4);
            __builtin_memcpy(a.laddr, args->saddr, 4);
        }
        ns_bump_accept(&a);
    }
    u64 key = (u64)args->skaddr;
    struct ns_tcp_health *h = tcp_conns.lookup(&key);
    /* A closed entry not yet collected whose socket memory was reused by a
     * new connection: start over (its final report is lost; rare, as the
     * loader collects closed entries every interval). */
    if (!h || (h->closed && ns != BPF_TCP_CLOSE)) {
        /* A listener or a socket that never connected is not a connection. */
        if (ns == BPF_TCP_LISTEN || ns == BPF_TCP_CLOSE)
            return 0;
        u32 zero = 0;
        struct ns_tcp_health *z = tcp_zero.lookup(&zero);
        if (!z)
            return 0;
        z->first_ns = bpf_ktime_get_ns();
        if (ns == BPF_TCP_SYN_SENT) {
            /* connect() runs in the caller's context: the process is known. */
            u64 pt = bpf_get_current_pid_tgid();
            z->pid = pt >> 32;
            z->uid = (u32)bpf_get_current_uid_gid();
            bpf_get_current_comm(&z->comm, sizeof(z->comm));
        } else {
            z->pid = 0;
            z->uid = 0;
            __builtin_memset(z->comm, 0, sizeof(z->comm));
        }
        tcp_conns.update(&key, z);
        h = tcp_conns.lookup(&key);
        if (!h)
            return 0;
    }
    u64 now = bpf_ktime_get_ns();
    h->last_ns = now;
    u32 i = h->state_changes & (NS_TCP_STATE_LOG - 1);
    h->states[i] = ns;
    h->state_ns[i] = now;
    h->state_changes++;
    h->state = ns;
    /* Ports and addresses are final from ESTABLISHED on (sport is 0 in SYN_SENT). */
    h->family = args->family;
    h->sport = args->sport;
    h->dport = args->dport;
    if (args->family == NS_AF_INET6) {
        __builtin_memcpy(h->saddr, args->saddr_v6, 16);
        __builtin_memcpy(h->daddr, args->daddr_v6, 16);
    } else {
        __builtin_memcpy(h->saddr, args->saddr, 4);
        __builtin_memcpy(h->daddr, args->daddr, 4);
    }
    if (ns == BPF_TCP_CLOSE)
        h->closed = 1;
    return 0;
}

TRACEPOINT_PROBE(tcp, tcp_probe)
{
    u64 key = (u64)args->skaddr;
    struct ns_tcp_health *h = tcp_conns.lookup(&key);
    if (!h)
        return 0;
    h->srtt_us = args->srtt;
    h->cwnd = args->snd_cwnd;
    h->ssthresh = args->ssthresh;
    h->probes++;
    h->last_ns = bpf_ktime_get_ns();
    return 0;
}

TRACEPOINT_PROBE(tcp, tcp_retransmit_skb)
{
    u64 key = (u64)args->skaddr;
    struct ns_tcp_health *h = tcp_conns.lookup(&key);
    if (h) {
        __sync_fetch_and_add(&h->retransmits, 1);
        h->last_ns = bpf_ktime_get_ns();
    }
    return 0;
}

TRACEPOINT_PROBE(tcp, tcp_send_reset)
{
    u64 key = (u64)args->skaddr;   /* NULL for a reset answering no socket */
    struct ns_tcp_health *h = key ? tcp_conns.lookup(&key) : 0;
    if (h)
        __sync_fetch_and_add(&h->rst_sent, 1);
    return 0;
}

TRACEPOINT_PROBE(tcp, tcp_receive_reset)
{
    u64 key = (u64)args->skaddr;
    struct ns_tcp_health *h = tcp_conns.lookup(&key);
    if (h)
        __sync_fetch_and_add(&h->rst_recv, 1);
    return 0;
}
#endif
