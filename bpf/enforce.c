/* enforce.c - ban enforcement from one ban set (two LPM tries).
 *
 *  - ns_xdp_filter: XDP ingress. Drops IPv4/IPv6 packets (optionally behind
 *    up to two VLAN tags) whose source address falls in a banned prefix,
 *    counting drops per ban. Everything else passes.
 *  - ns_connect4/6, ns_sendmsg4/6: cgroup sock_addr hooks at the cgroup2
 *    root. XDP only sees incoming packets, so without these a connect() to a
 *    banned host would hang while SYNs retry; here it fails at once with
 *    EPERM (return 0). v4-mapped IPv6 destinations are checked against the
 *    IPv4 set.
 * UAPI types only (see netsentinel.h).
 */
#include "netsentinel.h"

BPF_LPM_TRIE(bans4, struct ns_lpm_v4, struct ns_ban_value, NS_MAX_BANS);
BPF_LPM_TRIE(bans6, struct ns_lpm_v6, struct ns_ban_value, NS_MAX_BANS);
BPF_PERCPU_ARRAY(counters, u64, NS_CNT_MAX);

static __always_inline void ns_count(u32 idx)
{
    u64 *c = counters.lookup(&idx);
    if (c)
        *c += 1;
}

static __always_inline int ns_drop_if_banned(struct ns_ban_value *v)
{
    if (!v)
        return XDP_PASS;
    __sync_fetch_and_add(&v->drops, 1);
    v->last_drop_ns = bpf_ktime_get_ns();
    ns_count(NS_CNT_XDP_DROP);
    return XDP_DROP;
}

int ns_xdp_filter(struct xdp_md *ctx)
{
    void *data = (void *)(long)ctx->data;
    void *data_end = (void *)(long)ctx->data_end;
    struct ethhdr *eth = data;
    void *cursor = eth + 1;

    if (cursor > data_end)
        return XDP_PASS;
    ns_count(NS_CNT_XDP_SEEN);

    u16 proto = eth->h_proto;
#pragma unroll
    for (int i = 0; i < 2; i++) {
        if (proto != htons(ETH_P_8021Q) && proto != htons(ETH_P_8021AD))
            break;
        struct ns_vlan_hdr *vh = cursor;
        if ((void *)(vh + 1) > data_end)
            return XDP_PASS;
        proto = vh->encap_proto;
        cursor = vh + 1;
    }

    if (proto == htons(ETH_P_IP)) {
        struct iphdr *ip = cursor;
        if ((void *)(ip + 1) > data_end)
            return XDP_PASS;
        struct ns_lpm_v4 key = {.prefixlen = 32, .addr = ip->saddr};
        return ns_drop_if_banned(bans4.lookup(&key));
    }
    if (proto == htons(ETH_P_IPV6)) {
        struct ipv6hdr *ip6 = cursor;
        if ((void *)(ip6 + 1) > data_end)
            return XDP_PASS;
        struct ns_lpm_v6 key = {.prefixlen = 128};
        __builtin_memcpy(key.addr, &ip6->saddr, 16);
        return ns_drop_if_banned(bans6.lookup(&key));
    }
    return XDP_PASS;
}

/* cgroup verdict: 1 allows, 0 refuses with EPERM (counted on the ban). */
static __always_inline int ns_allow_unless_banned(struct ns_ban_value *v, u32 counter)
{
    if (!v)
        return 1;
    __sync_fetch_and_add(&v->blocked, 1);
    v->last_blocked_ns = bpf_ktime_get_ns();
    ns_count(counter);
    return 0;
}

static __always_inline int ns_allow_v4(u32 addr, u32 counter)
{
    struct ns_lpm_v4 key = {.prefixlen = 32, .addr = addr};
    return ns_allow_unless_banned(bans4.lookup(&key), counter);
}

static __always_inline int ns_allow_v6(struct bpf_sock_addr *ctx, u32 counter)
{
    u32 a0 = ctx->user_ip6[0], a1 = ctx->user_ip6[1], a2 = ctx->user_ip6[2], a3 = ctx->user_ip6[3];
    if (a0 == 0 && a1 == 0 && a2 == htonl(0xffff))
        return ns_allow_v4(a3, counter);
    struct ns_lpm_v6 key = {.prefixlen = 128};
    __builtin_memcpy(&key.addr[0], &a0, 4);
    __builtin_memcpy(&key.addr[4], &a1, 4);
    __builtin_memcpy(&key.addr[8], &a2, 4);
    __builtin_memcpy(&key.addr[12], &a3, 4);
    return ns_allow_unless_banned(bans6.lookup(&key), counter);
}

int ns_connect4(struct bpf_sock_addr *ctx) { return ns_allow_v4(ctx->user_ip4, NS_CNT_CONNECT_BLOCK); }
int ns_connect6(struct bpf_sock_addr *ctx) { return ns_allow_v6(ctx, NS_CNT_CONNECT_BLOCK); }
int ns_sendmsg4(struct bpf_sock_addr *ctx) { return ns_allow_v4(ctx->user_ip4, NS_CNT_SENDMSG_BLOCK); }
int ns_sendmsg6(struct bpf_sock_addr *ctx) { return ns_allow_v6(ctx, NS_CNT_SENDMSG_BLOCK); }
