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

/* Python reads every `#define NS_<NAME> <integer>` in this file at import
 * (netsentinel/abi.py) instead of retyping it: add constants here, in that
 * form, and tests/test_abi.py checks the Python side still agrees. */
#define NS_AF_INET 2
#define NS_AF_INET6 10

/* Address family as stored in flow keys and rules (not AF_*). */
#define NS_FAMILY_V4 4
#define NS_FAMILY_V6 6

/* IP protocol numbers the programs and the filter rules know. */
#define NS_IPPROTO_ICMP 1
#define NS_IPPROTO_TCP 6
#define NS_IPPROTO_UDP 17
#define NS_IPPROTO_ICMPV6 58

/* TCP header flag bits (byte 13 of the header). */
#define NS_TCP_FLAGS_OFFSET 13
#define NS_TCP_FIN 0x01
#define NS_TCP_SYN 0x02
#define NS_TCP_RST 0x04
#define NS_TCP_PSH 0x08
#define NS_TCP_ACK 0x10
#define NS_TCP_URG 0x20
#define NS_TCP_ECE 0x40
#define NS_TCP_CWR 0x80

/* ICMP echo requests, counted as icmp_echo. */
#define NS_ICMP_ECHO_REQUEST 8
#define NS_ICMPV6_ECHO_REQUEST 128

/* UDP ports: SSDP (udp_ssdp, by destination) and the reflection/amplification
 * services (udp_reflect, by source port). */
#define NS_PORT_SSDP 1900
#define NS_REFLECT_PORT_CHARGEN 19
#define NS_REFLECT_PORT_DNS 53
#define NS_REFLECT_PORT_NTP 123
#define NS_REFLECT_PORT_SNMP 161
#define NS_REFLECT_PORT_CLDAP 389
#define NS_REFLECT_PORT_SSDP 1900
#define NS_REFLECT_PORT_MEMCACHED 11211

/* IPv4 frag_off: offset bits; non-zero means not the first fragment. */
#define NS_IP_FRAG_OFFSET_MASK 0x1FFF

/* Capture modes, as reported in each event. */
#define NS_MODE_KPROBE 1
#define NS_MODE_TRACEPOINT 2

#ifndef NS_MAX_BANS
#define NS_MAX_BANS 1048576
#endif

/* One outbound TCP connection attempt. */
struct ns_conn_event {
    u64 ts_ns;
    /* The process's start: its group leader's start_boottime (CLOCK_BOOTTIME
     * ns; /proc/PID/stat's starttime is this in clock ticks), read through
     * offsets from the running kernel's BTF. With the pid it names one
     * process exactly (pids are reused). 0: unknown (no BTF offsets). */
    u64 start_ns;
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

/* Connects folded when the ring buffer is full (bpf/conn_monitor.bpf.c): one
 * entry per (process, destination, port) standing for `count` connects, the
 * first of them whole; drained by the loader every poll. */
#define NS_MAX_CONN_FOLDS 16384
struct ns_conn_fold_key {
    u32 pid;
    u16 family;
    u16 dport;
    u8 daddr[16];
};

/* Processes the loader has read in /proc (`conn_known`, tgid -> start_ns,
 * written by user space): their connects are put in the ring without a
 * wake-up, read in batches at the loader's next turn; any other process's
 * connect wakes the loader at once, so a short-lived process is read while
 * it lives. */
#define NS_MAX_CONN_KNOWN 4096

struct ns_conn_fold {
    struct ns_conn_event first;
    u64 last_ns;        /* bpf_ktime_get_ns() of the last connect folded in */
    u64 count;          /* connects this entry stands for, the first included */
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
    u64 last_drop_ns;     /* bpf_ktime_get_coarse_ns() (CLOCK_MONOTONIC, one tick) of the last drop */
    u64 blocked;          /* connect()/sendmsg() refused towards this destination */
    u64 last_blocked_ns;
    u64 expires_ns;       /* CLOCK_BOOTTIME ns after which the ban is ignored; 0 = never */
    u32 prefixlen;        /* the entry's own prefix, to look past it once expired */
    u32 last_drop_tick;   /* low 32 bits of bpf_jiffies64() when last_drop_ns was read */
};

/* The XDP drop path's cache of banned IPv4 sources (`ban_cache`, a per-CPU
 * array of NS_BAN_CACHE_SLOTS slots, indexed by a multiplicative hash of the
 * source). A slot holds one banned source, the prefix of the ban covering
 * it, that ban's expiry and the ban-set generation it was filled at: a hit
 * drops after two array lookups the kernel inlines, where the LPM trie walk
 * costs 13 ns with one prefix and 23 ns with 100,000 (bench/xdp_variants.py).
 * User space bumps `ban_gen` after every change to the ban set, so a slot
 * filled before the change is a miss and the trie decides again. Drops seen
 * through a slot are counted in it (per CPU, no shared cache line): added
 * to the ban's own value when the slot is taken by another source, and
 * added by user space to what the ban's value says meanwhile
 * (kernel/maps.py). IPv6 sources always go through the trie. */
#define NS_BAN_CACHE_BITS 10
#define NS_BAN_CACHE_SLOTS 1024   /* 1 << NS_BAN_CACHE_BITS */

struct ns_ban_cache {
    u64 gen;              /* ban_gen's generation when filled; 0 = empty */
    u64 expires_ns;       /* the covering ban's, copied */
    u64 drops;            /* drops counted here and not yet added to the ban's value */
    u64 last_drop_ns;     /* bpf_ktime_get_coarse_ns() of the last drop counted here */
    u32 addr;             /* the source, network order */
    u32 prefixlen;        /* the covering ban's prefix: its key is addr masked to it */
    u32 last_drop_tick;   /* low 32 bits of bpf_jiffies64() when last_drop_ns was read */
    u32 _pad;
};

/* The one slot of `ban_gen`, written by user space only. gen 0 (never set)
 * turns the cache off: every packet goes through the trie. */
struct ns_ban_gen {
    u64 gen;              /* bumped after each change to bans4/bans6 */
    u32 mult;             /* odd multiplier of the slot hash, random per map */
    u32 _pad;
};

/* How many expired entries one lookup looks past (nested prefixes) before
 * it stops looking; more nesting than this while no loader runs is treated
 * as not banned until the loader is back and deletes the expired entries. */
#define NS_EXPIRED_SKIP_MAX 4

/* Contained processes (an application firewall, issue 12): their
 * connect()/sendmsg() fail with EPERM and they cannot create inet sockets
 * (raw ones included), whatever the destination. Two pinned hashes:
 * `contain_pids` by tgid (a contained parent's children are added in the
 * kernel at fork, and an entry goes when its process exits) and
 * `contain_exes` by the executable's identity (the device and inode of
 * the task's mm->exe_file, read at the hook through offsets from the
 * running kernel's BTF), so a re-run of the same binary is contained too,
 * loader or no loader. Values carry an expiry like bans. A third,
 * `contain_socks`, holds the cookies of the sockets a contained process
 * already had, whose packets are dropped both ways. */
#ifndef NS_MAX_CONTAINED
#define NS_MAX_CONTAINED 65536
#endif
#define NS_MAX_CONTAINED_EXES 4096

struct ns_exe_key {
    u64 ino;
    u32 dev;        /* the kernel's dev_t: major << 20 | minor */
    u32 _pad;
};

struct ns_contain_value {
    u64 expires_ns;       /* CLOCK_BOOTTIME ns after which the entry is ignored; 0 = never */
    u64 blocked;          /* connect()/sendmsg()/socket() refused */
    u64 last_blocked_ns;  /* bpf_ktime_get_ns() of the last refusal */
    u32 origin;           /* the tgid user space contained; a child's copies its parent's */
    u32 inherited;        /* 1: added in the kernel at fork (a child of a contained process) */
};

/* Per-source traffic statistics (inbound, per-CPU LRU hash). */
#ifndef NS_FLOW_ENTRIES
#define NS_FLOW_ENTRIES 65536
#endif

struct ns_flow_key {
    u8 family;      /* NS_FAMILY_V4 or NS_FAMILY_V6 */
    u8 _pad[3];
    u8 addr[16];    /* network order; IPv4 in the first 4 bytes */
};

/* The per-source threshold window, kept beside the statistics (per CPU). */
struct ns_flow_window {
    u64 start_ns;      /* bpf_ktime_get_coarse_ns() when this window began */
    u64 count;         /* packets in it */
};

struct ns_flow_stats {
    struct ns_flow_window win;
    u64 packets;
    u64 bytes;
    u64 tcp;
    u64 udp;
    u64 icmp;          /* ICMP and ICMPv6 */
    u64 other;
    u64 tcp_syn;       /* SYN without ACK */
    u64 tcp_ack;       /* anything with ACK set */
    u64 icmp_echo;     /* NS_ICMP_ECHO_REQUEST / NS_ICMPV6_ECHO_REQUEST */
    u64 udp_ssdp;      /* UDP to NS_PORT_SSDP */
    u64 udp_reflect;   /* UDP from a NS_REFLECT_PORT_* */
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
/* Token bucket per rule slot (rule_buckets): a packet the rule matches
 * passes while the bucket holds a token, else it is dropped and counted as
 * a hit. Caps new SYNs/UDP/ICMP per second for a port under an aggregate
 * (spoofed, many-source) flood, where banning addresses makes no sense. */
#define NS_RULE_RATELIMIT 3

/* Two rule sets, double-buffered: set s occupies slots [s * NS_MAX_RULES,
 * s * NS_MAX_RULES + count). User space writes the set that is not in use,
 * its count, then flips ACTIVE in one store, so a packet sees the old set or
 * the new one, never a half-written or an empty one. Slots of `rule_state`: */
#define NS_RULE_STATE_ACTIVE 0
#define NS_RULE_STATE_COUNT0 1      /* count of set s at NS_RULE_STATE_COUNT0 + s */
#define NS_RULE_STATE_MAX 3

struct ns_rule {
    u8 action;         /* 0 = empty slot, NS_RULE_DROP, NS_RULE_COUNT */
    u8 family;         /* 0 any, NS_FAMILY_V4, NS_FAMILY_V6 */
    u8 proto;          /* 0 any, else NS_IPPROTO_* */
    u8 tcp_flags_mask; /* match when (flags & mask) == value */
    u8 tcp_flags_value;
    u8 icmp_type_set;  /* 1: icmp_type must match */
    u8 icmp_type;
    u8 _pad;
    u16 sport_min, sport_max;   /* host order; 0-65535 = any */
    u16 dport_min, dport_max;
    u8 src[16];        /* network order, already masked */
    u8 mask[16];       /* prefix mask; all zero = any source */
    u32 cost_ns;       /* NS_RULE_RATELIMIT: 1e9 / packets per second */
    u32 burst;         /* NS_RULE_RATELIMIT: bucket size in packets */
};

/* State of one NS_RULE_RATELIMIT slot: credit in ns (each packet costs
 * cost_ns, time refills it up to burst * cost_ns) and when it was refilled.
 * Shared by all CPUs, updated without atomics: under contention a few more
 * packets than the cap may pass, never fewer. */
struct ns_bucket {
    u64 credit_ns;
    u64 last_ns;
};

/* Global counters (per-CPU array indices); Python names each one by the
 * lower-cased suffix (NS_CNT_XDP_DROPS -> "xdp_drops"). */
#define NS_CNT_XDP_SEEN 0      /* frames no ban dropped: readers add NS_CNT_XDP_DROPS (kernel/maps.py) */
#define NS_CNT_XDP_DROPS 1
#define NS_CNT_CONNECT_BLOCKED 2
#define NS_CNT_SENDMSG_BLOCKED 3
#define NS_CNT_RULE_DROPS 4
#define NS_CNT_TCP_SYN 5       /* inbound totals, every source (aggregate view) */
#define NS_CNT_UDP 6
#define NS_CNT_ICMP 7
#define NS_CNT_MAX 8

/* Thresholds checked in the XDP program (the `xdp_config` array, written by
 * the loader at start): what crosses one is sent once per window through the
 * `xdp_events` ring buffer, so user space never walks the statistics maps. */
#define NS_CFG_SRC_PPS 0         /* packets per window from one source (per CPU) */
#define NS_CFG_AGG_SYN_PPS 1     /* SYNs without ACK per window to one TCP port */
#define NS_CFG_AGG_UDP_PPS 2     /* datagrams per window to one UDP port */
#define NS_CFG_AGG_ICMP_PPS 3    /* ICMP/ICMPv6 packets per window */
#define NS_CFG_MAX 4
/* Threshold windows last this long (bpf_ktime_get_coarse_ns; one second). */
#define NS_WINDOW_NS 1000000000

/* Aggregate keys: what is counted per destination port. */
#define NS_AGG_SYN 1
#define NS_AGG_UDP 2
#define NS_AGG_ICMP 3          /* port 0 */
#define NS_AGG_STEP 4          /* crossings are reported at 1, 4 and 16 times the threshold */
#ifndef NS_AGG_ENTRIES
#define NS_AGG_ENTRIES 4096
#endif

struct ns_agg_key {
    u8 kind;           /* NS_AGG_* */
    u8 _pad;
    u16 dport;         /* host order; 0 for ICMP */
};

/* One window's count, shared by all CPUs (an atomic add, so a flood spread
 * over CPUs still sums to one rate). Totals per protocol are NS_CNT_*. */
struct ns_agg_value {
    u64 win_start_ns;
    u64 win_count;
};

/* Ring-buffer records (`xdp_events`). */
#define NS_XEV_SOURCE 1        /* a source crossed NS_CFG_SRC_PPS in this window */
#define NS_XEV_AGG 2           /* an aggregate crossed its threshold (or a step above it) in this window */
#define NS_XEV_AGG_WINDOW 3    /* an aggregate's window over the threshold ended: its full count */
#define NS_XEV_PAGES 64        /* ring buffer size in pages (a power of two) */

struct ns_xdp_event {
    u8 type;           /* NS_XEV_* */
    u8 family;         /* NS_XEV_SOURCE: NS_FAMILY_V4 or NS_FAMILY_V6 */
    u8 kind;           /* NS_XEV_AGG*: NS_AGG_* */
    u8 _pad;
    u16 dport;
    u16 _pad2;
    u64 count;         /* packets in the window so far (the threshold when crossing) */
    u64 elapsed_ns;    /* since the window started */
    u8 addr[16];       /* NS_XEV_SOURCE: the source, network order */
};

/* Slots of the pinned `meta` array, for the next loader that adopts the pins:
 * the hash of the program source and flags behind the pinned links (a new
 * loader replaces the programs only when its own hash differs), and the XDP
 * attach flags the link was created with. */
#define NS_META_PROG_VERSION 0
#define NS_META_XDP_FLAGS 1
#define NS_META_MAX 2

/* 802.1Q / 802.1ad tag (linux/if_vlan.h is not UAPI). */
struct ns_vlan_hdr {
    __be16 tci;
    __be16 encap_proto;
};

#endif
