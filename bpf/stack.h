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
    u8 tcp_flags;   /* TCP header flags byte (FIN 0x01 ... ACK 0x10); 0 otherwise */
    u8 pad[3];
    u8 saddr[16];
    u8 daddr[16];
};

/* Slots of stack_misses: why a drop could not be filed in a map. */
#define NS_MISS_SITES_FULL 0
#define NS_MISS_FLOWS_FULL 1
#define NS_MISS_ACCEPTS_FULL 2
#define NS_MISS_SLOTS 3

/* Handshakes completed on this host's listeners (SYN_RECV -> ESTABLISHED,
 * SYN-cookie ones included), counted per remote address and local port in
 * the kernel and drained by the loader each interval: the one piece of
 * inbound evidence a spoofed source address cannot produce. */
struct ns_accept_key {
    u8 family;      /* 4 or 6 */
    u8 pad;
    u16 lport;      /* the listener's port, host order */
    u8 raddr[16];   /* the remote (client) address */
    u8 laddr[16];   /* the local address it connected to */
};

/* TCP health of one connection, keyed by its socket address (a value the
 * tcp/sock tracepoints carry; never dereferenced). */
#define NS_TCP_STATE_LOG 8
struct ns_tcp_health {
    u64 first_ns;       /* bpf_ktime_get_ns() at first sight */
    u64 last_ns;        /* last tracepoint hit */
    u64 state_ns[NS_TCP_STATE_LOG];   /* ring of the last state changes */
    u8 states[NS_TCP_STATE_LOG];
    u32 state_changes;  /* also the ring's write index */
    u32 pid;            /* the connecting process (SYN_SENT), 0 when inbound */
    u32 uid;
    u32 srtt_us;        /* from tcp_probe (the kernel's srtt_us >> 3) */
    u32 cwnd;
    u32 ssthresh;
    u32 probes;         /* tcp_probe hits (segments received) */
    u32 retransmits;
    u32 rst_sent;
    u32 rst_recv;
    u16 sport;
    u16 dport;
    u16 family;
    u8 state;           /* current TCP state (BPF_TCP_*) */
    u8 closed;
    u8 saddr[16];
    u8 daddr[16];
    char comm[16];
};

#endif
