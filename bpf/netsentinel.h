/* netsentinel.h - structs and constants shared by NetSentinel's BPF programs.
 *
 * Only UAPI types and tracepoint formats are used here and in every program
 * that includes this file: never a kernel-internal struct layout. That is
 * what makes it safe to compile against the nearest distribution kernel
 * headers when the running kernel has none (see scripts/install.sh).
 *
 * The Python side reads these structs through BCC's generated ctypes types
 * (table.Key/Leaf, perf event()), so field names here are the contract.
 */
#ifndef NETSENTINEL_H
#define NETSENTINEL_H

#include <uapi/linux/bpf.h>
#include <uapi/linux/in.h>
#include <uapi/linux/in6.h>
#include <uapi/linux/if_ether.h>
#include <uapi/linux/ip.h>
#include <uapi/linux/ipv6.h>

#define NS_AF_INET 2
#define NS_AF_INET6 10

/* Capture modes, as reported in each event. */
#define NS_MODE_KPROBE 1
#define NS_MODE_TRACEPOINT 2

#ifndef NS_MAX_BANS
#define NS_MAX_BANS 1048576
#endif

/* One outbound TCP connection attempt. */
struct ns_conn_event {
    u64 ts_ns;
    u32 pid;        /* tgid */
    u32 tid;
    u32 uid;
    u16 family;     /* NS_AF_INET or NS_AF_INET6 */
    u16 dport;      /* host byte order */
    u16 sport;      /* host byte order; 0 when not yet chosen (kprobe entry) */
    u8 mode;
    u8 has_saddr;
    u8 saddr[16];   /* network order; IPv4 in the first 4 bytes */
    u8 daddr[16];
    char comm[16];
};

/* LPM trie keys: prefix length first, then the address in network order. */
struct ns_lpm_v4 {
    u32 prefixlen;
    u32 addr;
};

struct ns_lpm_v6 {
    u32 prefixlen;
    u8 addr[16];
};

/* Value of every ban: counters live here so `status` shows hits per ban. */
struct ns_ban_value {
    u64 drops;            /* packets dropped at XDP from this source */
    u64 last_drop_ns;     /* bpf_ktime_get_ns() of the last drop */
    u64 blocked;          /* connect()/sendmsg() refused towards this destination */
    u64 last_blocked_ns;
};

/* Per-source traffic statistics (inbound, per-CPU LRU hash). */
#ifndef NS_FLOW_ENTRIES
#define NS_FLOW_ENTRIES 65536
#endif

struct ns_flow_key {
    u8 family;      /* 4 or 6 */
    u8 _pad[3];
    u8 addr[16];    /* network order; IPv4 in the first 4 bytes */
};

struct ns_flow_stats {
    u64 packets;
    u64 bytes;
    u64 tcp;
    u64 udp;
    u64 icmp;          /* ICMP and ICMPv6 */
    u64 other;
    u64 tcp_syn;       /* SYN without ACK */
    u64 tcp_ack;       /* anything with ACK set */
    u64 icmp_echo;     /* echo requests (v4 type 8, v6 type 128) */
    u64 udp_ssdp;      /* UDP to port 1900 */
    u64 udp_reflect;   /* UDP from a reflection port (19,53,123,161,389,1900,11211) */
    /* bit (dport % 64) per window: a cheap estimate of distinct ports. Two
     * bitmaps alternate by window (epoch parity) so user space reads a
     * finished window while the kernel fills the next, with no reset race. */
    u64 dport_bits[2];
    u64 dport_epoch[2];
    u64 first_seen_ns;
    u64 last_seen_ns;
};

/* Filter rules beside the address bans: evaluated in order, first match wins. */
#ifndef NS_MAX_RULES
#define NS_MAX_RULES 64
#endif
#define NS_RULE_DROP 1
#define NS_RULE_COUNT 2

struct ns_rule {
    u8 action;         /* 0 = empty slot, NS_RULE_DROP, NS_RULE_COUNT */
    u8 family;         /* 0 any, 4, 6 */
    u8 proto;          /* 0 any, else IP protocol number (1, 6, 17, 58) */
    u8 tcp_flags_mask; /* match when (flags & mask) == value */
    u8 tcp_flags_value;
    u8 icmp_type_set;  /* 1: icmp_type must match */
    u8 icmp_type;
    u8 _pad;
    u16 sport_min, sport_max;   /* host order; 0-65535 = any */
    u16 dport_min, dport_max;
    u8 src[16];        /* network order, already masked */
    u8 mask[16];       /* prefix mask; all zero = any source */
};

/* Global counters (per-CPU array indices). */
#define NS_CNT_XDP_SEEN 0
#define NS_CNT_XDP_DROP 1
#define NS_CNT_CONNECT_BLOCK 2
#define NS_CNT_SENDMSG_BLOCK 3
#define NS_CNT_RULE_DROP 4
#define NS_CNT_MAX 5

/* 802.1Q / 802.1ad tag (linux/if_vlan.h is not UAPI). */
struct ns_vlan_hdr {
    __be16 tci;
    __be16 encap_proto;
};

#endif
