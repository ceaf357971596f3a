/* stack_path.bpf.c - the path a received packet takes (follows stack.bpf.c).
 *
 * A TCP/UDP packet is remembered by its skb address at net:netif_receive_skb
 * (flow parsed from skb->data: the network header is not set yet there),
 * then each later hook it reaches (tcp:tcp_probe, skb:skb_copy_datagram_iovec,
 * skb:consume_skb, skb:kfree_skb) adds one to the flow's edge from the hook
 * before and files the time between the two in a log2 histogram. Only edges
 * reach user space, drained on the loader's interval: never an event per
 * packet. An skb freed without a tracepoint (the kernel has such paths)
 * simply ages out of the LRU; an address reused by another packet is caught
 * by comparing the flow again at each hook. Packets of other network
 * namespaces are not followed (NS_OWN_NETNS: the loader's).
 */
#ifdef NS_STACK_PATH
BPF_TABLE("lru_hash", u64, struct ns_path_skb, path_skbs, NS_MAX_PATH_SKBS);
BPF_HASH(path_edges, struct ns_path_key, struct ns_path_edge, NS_MAX_PATH_EDGES);
BPF_PERCPU_ARRAY(path_zero, struct ns_path_edge, 1);   /* an all-zero edge to insert */

static __always_inline void ns_path_count(struct ns_path_key *k, u64 dt, int timed)
{
    struct ns_path_edge *e = path_edges.lookup(k);
    if (!e) {
        u32 zero = 0;
        struct ns_path_edge *z = path_zero.lookup(&zero);
        if (!z)
            return;
        path_edges.insert(k, z);    /* fails if another CPU was first, or when full */
        e = path_edges.lookup(k);
        if (!e) {
            ns_miss(NS_MISS_PATH_FULL);
            return;
        }
    }
    __sync_fetch_and_add(&e->count, 1);
    if (timed) {
        u32 b = bpf_log2l(dt);
        if (b >= NS_PATH_BUCKETS)
            b = NS_PATH_BUCKETS - 1;
        __sync_fetch_and_add(&e->sum_ns, dt);
        __sync_fetch_and_add(&e->hist[b], 1);
    }
}

static __always_inline void ns_path_flow(struct ns_path_key *k, struct ns_pkt *p, u32 netns)
{
    k->family = p->family;
    k->proto = p->proto;
    k->sport = p->sport;
    k->dport = p->dport;
    k->netns = netns;
    __builtin_memcpy(k->saddr, p->saddr, 16);
    __builtin_memcpy(k->daddr, p->daddr, 16);
}

static __always_inline int ns_same_flow(struct ns_path_key *k, struct ns_pkt *p)
{
    u64 *a = (u64 *)k->saddr, *b = (u64 *)p->saddr;
    u64 *c = (u64 *)k->daddr, *d = (u64 *)p->daddr;
    return k->family == p->family && k->proto == p->proto && k->sport == p->sport &&
           k->dport == p->dport && a[0] == b[0] && a[1] == b[1] && c[0] == d[0] && c[1] == d[1];
}

/* The packet at skb reached `hook`: count the edge from its previous hook. */
static __always_inline void ns_path_step(void *skb, u8 hook, u32 reason)
{
    u64 addr = (u64)skb;
    struct ns_path_skb *s = path_skbs.lookup(&addr);
    if (!s || s->hook == hook)      /* unknown, or a second read of the same skb */
        return;
    struct ns_pkt p = {};
    ns_skb_pkt(skb, &p);
    if (!ns_same_flow(&s->key, &p)) {
        path_skbs.delete(&addr);    /* the address now holds another packet */
        return;
    }
    u64 now = bpf_ktime_get_ns();
    struct ns_path_key k = s->key;
    k.from = s->hook;
    k.to = hook;
    k.reason = reason;
    u64 dt = now - s->ts;
    if (hook == NS_HOOK_CONSUMED || hook == NS_HOOK_DROPPED) {
        path_skbs.delete(&addr);
    } else {
        s->hook = hook;
        s->ts = now;
    }
    ns_path_count(&k, dt, 1);
}

/* kfree_skb: the end of a known packet's path, or (XDP drops on veth, drops
 * before receive) a path of one edge from the start. */
static __always_inline void ns_path_drop(void *skb, u32 reason, struct ns_pkt *p, u32 netns)
{
    u64 addr = (u64)skb;
    if (path_skbs.lookup(&addr)) {
        ns_path_step(skb, NS_HOOK_DROPPED, reason);
    } else if (p->family && netns == NS_OWN_NETNS) {
        struct ns_path_key k = {};
        ns_path_flow(&k, p, netns);
        k.from = NS_HOOK_START;
        k.to = NS_HOOK_DROPPED;
        k.reason = reason;
        ns_path_count(&k, 0, 0);
    }
}

TRACEPOINT_PROBE(net, netif_receive_skb)
{
    void *skb = (void *)args->skbaddr;
    u16 proto = 0;
    unsigned char *data = 0;
    bpf_probe_read_kernel(&proto, sizeof(proto), skb + NS_SKB_PROTOCOL);
    if (proto != htons(ETH_P_IP) && proto != htons(ETH_P_IPV6))
        return 0;
    /* Only packets received in the loader's own network namespace: another
     * namespace's flood (a container's) would crowd this host's flows out of
     * the bounded maps, and costs less turned away here. */
    u32 netns = ns_skb_netns(skb, 0);
    if (netns != NS_OWN_NETNS)
        return 0;
    bpf_probe_read_kernel(&data, sizeof(data), skb + NS_SKB_DATA);
    if (!data)
        return 0;
    struct ns_pkt p = {};
    ns_parse(data, &p);
    if (p.proto != IPPROTO_TCP && p.proto != IPPROTO_UDP)
        return 0;
    struct ns_path_skb s = {};
    ns_path_flow(&s.key, &p, netns);
    s.ts = bpf_ktime_get_ns();
    s.hook = NS_HOOK_RECEIVE;
    u64 addr = (u64)skb;
    path_skbs.update(&addr, &s);
    struct ns_path_key k = s.key;
    k.from = NS_HOOK_START;
    k.to = NS_HOOK_RECEIVE;
    ns_path_count(&k, 0, 0);
    return 0;
}

TRACEPOINT_PROBE(skb, skb_copy_datagram_iovec)
{
    ns_path_step((void *)args->skbaddr, NS_HOOK_SOCKET, 0);
    return 0;
}

TRACEPOINT_PROBE(skb, consume_skb)
{
    ns_path_step((void *)args->skbaddr, NS_HOOK_CONSUMED, 0);
    return 0;
}
#endif
