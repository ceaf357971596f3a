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
#define NS_MISS_PATH_FULL 3
#define NS_MISS_CLOSED_FULL 4
#define NS_MISS_RCVQ_FULL 5
#define NS_MISS_QUIET_CLOSED 6
#define NS_MISS_SLOTS 7

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
    u8 inbound;         /* first seen as SYN_RECV -> ESTABLISHED (pid: the accept() caller) */
    u8 saddr[16];
    u8 daddr[16];
    char comm[16];
    u32 queue_drops;    /* its packets dropped at a full receive queue (see ns_rcvq_sock) */
    u32 netns;          /* its network namespace's inode, 0 when unknown (no BTF) */
};

/* A packet's flow as parsed from its headers (ports 0 when not TCP/UDP
 * or not in the first fragment). */
struct ns_pkt {
    u8 family;      /* 4 or 6; 0 when not parsed */
    u8 proto;       /* the L4 protocol, after IPv6 extension headers */
    u16 sport;      /* host order */
    u16 dport;
    u8 tcp_flags;
    u8 pad;
    u8 saddr[16];
    u8 daddr[16];
};

/* A socket whose receive queue had no room for a packet, keyed by its
 * address (kfree_skb's rx_sk). The memory figures are those the
 * sock:sock_rcvqueue_full tracepoint carries, read from the sock itself at
 * the drop (UDP no longer fires that tracepoint on 6.x kernels). */
struct ns_rcvq_sock {
    u64 drops;
    u64 first_ns;
    u64 last_ns;
    u64 inode;          /* the socket's inode: the loader finds its process in /proc/PID/fd */
    u32 uid;            /* sk_uid: the socket's owner */
    s32 rmem_alloc;     /* receive memory in use at the last drop */
    s32 rcvbuf;         /* sk_rcvbuf, the limit */
    u32 truesize;       /* the last dropped skb's */
    u32 reason;         /* the last drop's */
    u32 netns;
    struct ns_pkt pkt;  /* the last dropped packet: its destination is the socket's end */
};

/* A closed connection waiting for its final report: its socket's memory may
 * already hold a new connection, so it is keyed by both. */
struct ns_closed_key {
    u64 sk;
    u64 first_ns;
};

/* ------------------------------------------------------------- the path
 * Hooks a received packet passes, in order. An edge (from, to) per flow
 * counts the packets that went from one hook to the next and their
 * latency (log2 histogram of the nanoseconds between the two hooks). */
#define NS_HOOK_START 0      /* edge origin: the packet's first hook */
#define NS_HOOK_RECEIVE 1    /* net:netif_receive_skb */
#define NS_HOOK_TCP 2        /* tcp:tcp_probe (segment taken by an established socket) */
#define NS_HOOK_SOCKET 3     /* skb:skb_copy_datagram_iovec (copied to the reading process) */
#define NS_HOOK_CONSUMED 4   /* skb:consume_skb */
#define NS_HOOK_DROPPED 5    /* skb:kfree_skb (the reason is in the key) */
#define NS_PATH_BUCKETS 32

struct ns_path_key {
    u8 family;
    u8 proto;
    u16 sport;
    u16 dport;
    u8 from;        /* NS_HOOK_* */
    u8 to;
    u32 reason;     /* the drop reason when to == NS_HOOK_DROPPED, else 0 */
    u32 netns;      /* receiving device's namespace inode, 0 when unknown */
    u8 saddr[16];
    u8 daddr[16];
};

struct ns_path_edge {
    u64 count;
    u64 sum_ns;
    u32 hist[NS_PATH_BUCKETS];   /* hist[i]: latencies in [2^(i-1), 2^i) ns (bpf_log2l) */
};

/* One packet in flight, keyed by its skb address. */
struct ns_path_skb {
    struct ns_path_key key;   /* from/to/reason unused here */
    u64 ts;
    u8 hook;
    u8 pad[7];
};

#endif
