/* stack_drops.bpf.c - full receive queues per socket and the drops
 * themselves (skb:kfree_skb), last in the program: it feeds the maps of the
 * files before it (stack.bpf.c, stack_path.bpf.c, stack_tcp.bpf.c). */

/* ---------------------------------------------------------------- full receive queues
 * kfree_skb names the socket a packet was meant for (rx_sk, Linux 6.12+):
 * a drop for one of the full-queue reasons (NS_RCVQ_REASON_*, values from
 * the format file) is counted per socket, with its memory at that moment,
 * and on its TCP health entry. A map read on an interval, like the rest. */
#ifdef NS_STACK_RCVQ_SOCK
BPF_HASH(rcvq_socks, u64, struct ns_rcvq_sock, NS_MAX_RCVQ_SOCKS);
BPF_PERCPU_ARRAY(rcvq_zero, struct ns_rcvq_sock, 1);

static __always_inline int ns_full_queue(u32 r)
{
    return r == NS_RCVQ_REASON_0 || r == NS_RCVQ_REASON_1 || r == NS_RCVQ_REASON_2 ||
           r == NS_RCVQ_REASON_3;
}

static __always_inline void ns_rcvq_drop(u64 sk, void *skb, u32 reason, struct ns_pkt *p, u32 netns)
{
    struct ns_rcvq_sock *q = rcvq_socks.lookup(&sk);
    if (!q) {
        u32 zero = 0;
        struct ns_rcvq_sock *z = rcvq_zero.lookup(&zero);
        if (!z)
            return;
        void *sock = 0;
        z->first_ns = bpf_ktime_get_ns();
        z->inode = 0;
        z->uid = 0;
        bpf_probe_read_kernel(&z->uid, sizeof(z->uid), (void *)sk + NS_SK_UID);
        bpf_probe_read_kernel(&sock, sizeof(sock), (void *)sk + NS_SK_SOCKET);
        if (sock)   /* a struct socket sits in a socket_alloc beside its inode */
            bpf_probe_read_kernel(&z->inode, sizeof(z->inode), sock + NS_SOCKET_INODE_INO);
        z->netns = netns;
        rcvq_socks.insert(&sk, z);    /* fails if another CPU was first, or when full */
        q = rcvq_socks.lookup(&sk);
        if (!q) {
            ns_miss(NS_MISS_RCVQ_FULL);
            return;
        }
    }
    __sync_fetch_and_add(&q->drops, 1);
    q->last_ns = bpf_ktime_get_ns();
    q->reason = reason;
    q->pkt = *p;
    bpf_probe_read_kernel(&q->rmem_alloc, sizeof(q->rmem_alloc), (void *)sk + NS_SK_RMEM_ALLOC);
    bpf_probe_read_kernel(&q->rcvbuf, sizeof(q->rcvbuf), (void *)sk + NS_SK_RCVBUF);
    bpf_probe_read_kernel(&q->truesize, sizeof(q->truesize), skb + NS_SKB_TRUESIZE);
#ifdef NS_STACK_TCP
    struct ns_tcp_health *h = tcp_conns.lookup(&sk);
    if (h)
        __sync_fetch_and_add(&h->queue_drops, 1);
#endif
}
#endif

/* ---------------------------------------------------------------- drops */
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
    site.netns = ns_skb_netns(skb, &site.ifindex);
    struct ns_pkt p = {};
    ns_skb_pkt(skb, &p);
    if (p.family) {
        struct ns_drop_flow flow = {};
        flow.family = p.family;
        flow.proto = p.proto;
        flow.dport = p.dport;
        flow.tcp_flags = p.tcp_flags;
        __builtin_memcpy(flow.saddr, p.saddr, 16);
        __builtin_memcpy(flow.daddr, p.daddr, 16);
        flow.reason = reason;
        flow.netns = site.netns;
        ns_bump_flow(&flow);
    }
#ifdef NS_STACK_PATH
    ns_path_drop(skb, reason, &p, site.netns);
#endif
#ifdef NS_STACK_RCVQ_SOCK
    u64 sk = (u64)args->rx_sk;
    if (sk && ns_full_queue(reason))
        ns_rcvq_drop(sk, skb, reason, &p, site.netns);
#endif
#endif
    ns_bump_site(&site);
    return 0;
}

