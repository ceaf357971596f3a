/* stack.h - map keys shared by bpf/stack.bpf.c and netsentinel/kernel/stack.py
 * (the Python side mirrors these layouts with ctypes; keep them in step). */
#ifndef NS_STACK_H
#define NS_STACK_H

/* Drops per kernel site: reason x location x device. */
struct ns_drop_site {
    u64 location;   /* return address inside the dropping function */
    u32 reason;     /* enum skb_drop_reason, named from the tracepoint format */
    u32 ifindex;    /* skb->dev's ifindex, 0 when unknown */
    u32 netns;      /* inode of the device's network namespace, 0 when unknown */
    u32 pad;
};

/* Drops per packet flow (IPv4/IPv6 with a readable network header). */
struct ns_drop_flow {
    u8 family;      /* 4 or 6 */
    u8 proto;       /* IPPROTO_* */
    u16 dport;      /* host order; 0 when not TCP/UDP */
    u32 reason;
    u32 netns;
    u8 saddr[16];
    u8 daddr[16];
};

/* Slots of stack_misses: why a drop could not be filed in a map. */
#define NS_MISS_SITES_FULL 0
#define NS_MISS_FLOWS_FULL 1
#define NS_MISS_SLOTS 2

#endif
