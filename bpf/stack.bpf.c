/* stack.bpf.c - where the stack drops packets, and why: the maps and the
 * packet parser. The loader compiles it followed by stack_path.bpf.c,
 * stack_tcp.bpf.c and stack_drops.bpf.c as one program (BCC rewrites map calls only in the text
 * it is given, not in included headers).
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
#include <uapi/linux/if_ether.h>
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
/* The loader's own network namespace's flows have a map of their own, so a
 * flood of many sources in another namespace cannot leave them no room. */
BPF_HASH(drop_flows_own, struct ns_drop_flow, u64, NS_MAX_FLOWS);
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

static __always_inline void ns_bump_own_flow(struct ns_drop_flow *key)
{
    u64 one = 1, *v = drop_flows_own.lookup(key);
    if (v) {
        __sync_fetch_and_add(v, 1);
    } else if (drop_flows_own.insert(key, &one) != 0) {
        v = drop_flows_own.lookup(key);
        if (v)
            __sync_fetch_and_add(v, 1);
        else
            ns_miss(NS_MISS_FLOWS_FULL);
    }
}

static __always_inline void ns_bump_flow(struct ns_drop_flow *key)
{
    if (key->netns == NS_OWN_NETNS) {
        ns_bump_own_flow(key);
        return;
    }
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

#ifdef NS_STACK_RCVQ
/* sock:sock_rcvqueue_full, where a protocol still reports it (on 6.x kernels
 * UDP and raw sockets drop with SOCKET_RCVBUFF in kfree_skb instead, counted
 * per flow above). Its format names no socket, so this is a count. */
BPF_PERCPU_ARRAY(rcvq_full, u64, 1);

TRACEPOINT_PROBE(sock, sock_rcvqueue_full)
{
    u32 zero = 0;
    u64 *v = rcvq_full.lookup(&zero);
    if (v)
        (*v)++;
    return 0;
}
#endif

#ifdef NS_HAVE_SKB_OFFSETS
#define NS_IPV6_MAX_EXT 6   /* extension headers skipped before giving up on ports */

/* Parse the IP packet whose network header is at l3 (kernel memory) into p:
 * addresses, the L4 protocol after any IPv6 extension headers, ports and
 * TCP flags. Later fragments carry no L4 header: their ports stay 0. */
static __always_inline void ns_parse(unsigned char *l3, struct ns_pkt *p)
{
    u8 first = 0;
    if (bpf_probe_read_kernel(&first, 1, l3) != 0)
        return;
    unsigned char *l4 = 0;
    int later_fragment = 0;
    if ((first >> 4) == 4) {
        struct iphdr ip = {};
        if (bpf_probe_read_kernel(&ip, sizeof(ip), l3) != 0)
            return;
        p->family = 4;
        p->proto = ip.protocol;
        __builtin_memcpy(p->saddr, &ip.saddr, 4);
        __builtin_memcpy(p->daddr, &ip.daddr, 4);
        l4 = l3 + ip.ihl * 4;
        later_fragment = (ip.frag_off & htons(0x1fff)) != 0;
    } else if ((first >> 4) == 6) {
        struct ipv6hdr ip6 = {};
        if (bpf_probe_read_kernel(&ip6, sizeof(ip6), l3) != 0)
            return;
        p->family = 6;
        __builtin_memcpy(p->saddr, &ip6.saddr, 16);
        __builtin_memcpy(p->daddr, &ip6.daddr, 16);
        u8 nh = ip6.nexthdr;
        l4 = l3 + sizeof(ip6);
        #pragma unroll
        for (int i = 0; i < NS_IPV6_MAX_EXT; i++) {
            u8 h[4] = {};
            if (nh == IPPROTO_HOPOPTS || nh == IPPROTO_ROUTING || nh == IPPROTO_DSTOPTS) {
                if (bpf_probe_read_kernel(h, 2, l4) != 0)
                    return;
                nh = h[0];
                l4 += (h[1] + 1) * 8;        /* length in 8-octet units, not counting the first */
            } else if (nh == IPPROTO_FRAGMENT) {
                if (bpf_probe_read_kernel(h, 4, l4) != 0)
                    return;
                nh = h[0];
                later_fragment = ((h[2] << 8 | h[3]) & 0xfff8) != 0;
                l4 += 8;
            } else if (nh == IPPROTO_AH) {
                if (bpf_probe_read_kernel(h, 2, l4) != 0)
                    return;
                nh = h[0];
                l4 += (h[1] + 2) * 4;        /* length in 4-octet units, minus 2 */
            } else {
                break;
            }
        }
        p->proto = nh;
    } else {
        return;
    }
    if (later_fragment || (p->proto != IPPROTO_TCP && p->proto != IPPROTO_UDP))
        return;
    u16 ports[2] = {};
    if (bpf_probe_read_kernel(ports, sizeof(ports), l4) == 0) {
        p->sport = ntohs(ports[0]);
        p->dport = ntohs(ports[1]);
    }
    /* The flags tell a probe (SYN, FIN/NULL/Xmas) from backscatter (RST, SYN-ACK). */
    if (p->proto == IPPROTO_TCP)
        bpf_probe_read_kernel(&p->tcp_flags, 1, l4 + 13);
}

/* The packet an skb holds, from its network header (set from IP receive on). */
static __always_inline void ns_skb_pkt(void *skb, struct ns_pkt *p)
{
    unsigned char *head = 0;
    u16 nh = 0;
    bpf_probe_read_kernel(&head, sizeof(head), skb + NS_SKB_HEAD);
    bpf_probe_read_kernel(&nh, sizeof(nh), skb + NS_SKB_NETWORK_HEADER);
    if (head && nh != (u16)~0U)   /* no network header set: dropped before L3 */
        ns_parse(head + nh, p);
}

/* The network namespace inode of an skb's device; 0 when unknown. */
static __always_inline u32 ns_skb_netns(void *skb, u32 *ifindex)
{
    void *dev = 0, *net = 0;
    u32 inum = 0;
    bpf_probe_read_kernel(&dev, sizeof(dev), skb + NS_SKB_DEV);
    if (!dev)
        return 0;
    if (ifindex)
        bpf_probe_read_kernel(ifindex, sizeof(*ifindex), dev + NS_DEV_IFINDEX);
    bpf_probe_read_kernel(&net, sizeof(net), dev + NS_DEV_ND_NET);
    if (net)
        bpf_probe_read_kernel(&inum, sizeof(inum), net + NS_NET_INUM);
    return inum;
}
#endif
