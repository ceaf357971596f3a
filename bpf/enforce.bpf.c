/* enforce.c - ban enforcement from one ban set (two LPM tries).
 *
 *  - ns_xdp_filter: XDP ingress. Drops IPv4/IPv6 packets (optionally behind
 *    up to two VLAN tags) whose source address falls in a banned prefix,
 *    counting drops per ban. For the rest it keeps per-source statistics
 *    (flows, read by the loader for flood detection) and evaluates the
 *    filter rules (protocol, ports, TCP flags, ICMP type, source prefix;
 *    drop or pass-and-count). Everything else passes.
 *  - ns_tc_filter: the same body as a TCX ingress program (BPF_TCX_INGRESS
 *    link), for interfaces without native XDP (virtio-net on most cloud
 *    VMs); same maps, same counters, TC_ACT_SHOT for a drop.
 *  - ns_connect4/6, ns_sendmsg4/6: cgroup sock_addr hooks at the cgroup2
 *    root. XDP only sees incoming packets, so without these a connect() to a
 *    banned host would hang while SYNs retry; here it fails at once with
 *    EPERM (return 0). v4-mapped IPv6 destinations are checked against the
 *    IPv4 set. A contained process (contain_pids, contain_exes) is refused
 *    every destination, and ns_sock_create refuses it new inet sockets
 *    (raw ones included); ns_contain_skb drops the packets of the sockets
 *    it already had (contain_socks, by socket cookie).
 *  - ns_contain_fork, ns_contain_exit: sched tracepoints (pinned perf_event
 *    links) that carry containment to a contained process's children and
 *    drop an exited process's entry, so a reused pid is not contained.
 * UAPI types and tracepoint formats only (see netsentinel.h); the few
 * task_struct/mm/file/inode offsets the executable identity needs come as
 * -D from the running kernel's BTF (netsentinel/kernel/btf.py), and without
 * them only containment by executable is compiled out.
 */
#include "netsentinel.h"

/* With NS_PIN_DIR (a string the loader passes as -D) every map lives in
 * bpffs: BCC creates and pins it on the first start and reuses the pinned
 * map on every later one, so bans survive the loader. Without it (selfcheck,
 * --ebpf) the maps are private to the process. */
#ifdef NS_PIN_DIR
#define NS_MAP(type, key, leaf, name, size, flags) \
    BPF_TABLE_PINNED7(type, key, leaf, name, size, NS_PIN_DIR "/" #name, flags)
#else
#define NS_MAP(type, key, leaf, name, size, flags) BPF_F_TABLE(type, key, leaf, name, size, flags)
#endif

NS_MAP("lpm_trie", struct ns_lpm_v4, struct ns_ban_value, bans4, NS_MAX_BANS, BPF_F_NO_PREALLOC);
NS_MAP("lpm_trie", struct ns_lpm_v6, struct ns_ban_value, bans6, NS_MAX_BANS, BPF_F_NO_PREALLOC);
NS_MAP("percpu_array", u32, u64, counters, NS_CNT_MAX, 0);
NS_MAP("lru_percpu_hash", struct ns_flow_key, struct ns_flow_stats, flows, NS_FLOW_ENTRIES, 0);
NS_MAP("array", u32, struct ns_rule, rules, 2 * NS_MAX_RULES, 0);     /* two sets, see the header */
NS_MAP("array", u32, u32, rule_state, NS_RULE_STATE_MAX, 0);
NS_MAP("percpu_array", u32, u64, rule_hits, 2 * NS_MAX_RULES, 0);
NS_MAP("array", u32, u64, flow_epoch, 1, 0);        /* advanced by user space at each sample */
NS_MAP("array", u32, u64, meta, NS_META_MAX, 0);      /* NS_META_*, written by user space */
NS_MAP("array", u32, u64, xdp_config, NS_CFG_MAX, 0);  /* NS_CFG_* thresholds, written by user space */
NS_MAP("lru_hash", struct ns_agg_key, struct ns_agg_value, agg, NS_AGG_ENTRIES, 0);
NS_MAP("array", u32, struct ns_bucket, rule_buckets, 2 * NS_MAX_RULES, 0);
NS_MAP("percpu_array", u32, struct ns_ban_cache, ban_cache, NS_BAN_CACHE_SLOTS, 0);  /* see the header */
NS_MAP("array", u32, struct ns_ban_gen, ban_gen, 1, 0);

/* What crosses a threshold goes to user space through a ring buffer, once
 * per window. Pinned like the maps, so an adopted program keeps writing to
 * the buffer the next loader reads: BCC's BPF_RINGBUF_OUTPUT with the
 * section of a pinned table ("maps/ringbuf:<path>"). */
#ifdef NS_PIN_DIR
#define NS_RINGBUF_SECTION(name) __attribute__((section("maps/ringbuf:" NS_PIN_DIR "/" #name)))
#else
#define NS_RINGBUF_SECTION(name) __attribute__((section("maps/ringbuf")))
#endif
#define NS_RINGBUF(name, pages) \
    struct name##_table_t { \
        int key; \
        u32 leaf; \
        int (*ringbuf_output)(void *, u64, u64); \
        void *(*ringbuf_reserve)(u64); \
        void (*ringbuf_discard)(void *, u64); \
        void (*ringbuf_submit)(void *, u64); \
        u32 max_entries; \
    }; \
    NS_RINGBUF_SECTION(name) struct name##_table_t name = {.max_entries = (pages) * PAGE_SIZE}

NS_RINGBUF(xdp_events, NS_XEV_PAGES);

/* TC verdicts (linux/pkt_cls.h), spelled out to keep to the one header. */
#define NS_TC_ACT_SHOT 2
#define NS_TCX_NEXT -1      /* TCX_NEXT / TC_ACT_UNSPEC */
/* Ethernet + two VLAN tags + IPv6 + the TCP flags byte, rounded up. */
#define NS_TC_PULL_LEN 96

/* What the XDP program learned about one packet. */
struct ns_pkt {
    u8 family;
    u8 proto;
    u8 has_l4;
    u8 tcp_flags;
    u8 icmp_type;
    u16 sport, dport;   /* host order */
    u32 len;
    u8 saddr[16];
};

static __always_inline void ns_count(u32 idx)
{
    u64 *c = counters.lookup(&idx);
    if (c)
        *c += 1;
}

/* A ban counts until expires_ns (CLOCK_BOOTTIME, so suspend time counts
 * too). An expired entry is looked past, to the next shorter prefix, so it
 * never hides a live broader ban while no loader is there to delete it.
 * The clock is read only for an entry that has an expiry: a permanent ban
 * drops with no clock read at all (the XDP cost issue). */
static __always_inline struct ns_ban_value *ns_live_ban4(u32 addr)
{
    struct ns_lpm_v4 key = {.prefixlen = 32, .addr = addr};
    u64 now = 0;
#pragma unroll
    for (int i = 0; i < NS_EXPIRED_SKIP_MAX; i++) {
        struct ns_ban_value *v = bans4.lookup(&key);
        if (!v || !v->expires_ns)
            return v;
        if (!now)
            now = bpf_ktime_get_boot_ns();
        if (v->expires_ns > now)
            return v;
        if (v->prefixlen == 0 || v->prefixlen > 32)
            return NULL;
        key.prefixlen = v->prefixlen - 1;
    }
    return NULL;
}

static __always_inline struct ns_ban_value *ns_live_ban6(const void *addr)
{
    struct ns_lpm_v6 key = {.prefixlen = 128};
    __builtin_memcpy(key.addr, addr, 16);
    u64 now = 0;
#pragma unroll
    for (int i = 0; i < NS_EXPIRED_SKIP_MAX; i++) {
        struct ns_ban_value *v = bans6.lookup(&key);
        if (!v || !v->expires_ns)
            return v;
        if (!now)
            now = bpf_ktime_get_boot_ns();
        if (v->expires_ns > now)
            return v;
        if (v->prefixlen == 0 || v->prefixlen > 128)
            return NULL;
        key.prefixlen = v->prefixlen - 1;
    }
    return NULL;
}

/* Count one drop on a ban or a cache slot (its drops, last-drop time and
 * tick) and in the per-CPU NS_CNT_XDP_DROPS (the exact total). The cheapest
 * drop we can count (the XDP cost issue): a plain add (on a ban's value,
 * CPUs racing on one ban may lose a few of its count; a slot is per CPU),
 * and the last-drop time read at most once per tick: jiffies is one load
 * (the JIT inlines it, ~3 ns), where even the coarse clock is a helper call
 * (~15 ns, more than the LPM lookup). The coarse clock only moves once a
 * tick, so the time is as exact. */
static __always_inline int ns_count_drop(u64 *drops, u64 *last_ns, u32 *last_tick)
{
    *drops += 1;
    u32 tick = (u32)bpf_jiffies64();
    if (tick != *last_tick || !*last_ns) {
        *last_tick = tick;
        *last_ns = bpf_ktime_get_coarse_ns();
    }
    ns_count(NS_CNT_XDP_DROPS);
    return XDP_DROP;
}

static __always_inline int ns_drop_if_banned(struct ns_ban_value *v)
{
    if (!v)
        return XDP_PASS;
    return ns_count_drop(&v->drops, &v->last_drop_ns, &v->last_drop_tick);
}

/* A slot's drops go to the ban that covered its source (found by that
 * ban's own key), when the slot is about to hold another source. A ban
 * lifted meanwhile takes its count with it. */
static __always_inline void ns_cache_flush(struct ns_ban_cache *c)
{
    if (!c->drops)
        return;
    struct ns_lpm_v4 key = {.prefixlen = c->prefixlen, .addr = c->addr};
    struct ns_ban_value *v = bans4.lookup(&key);
    if (v && v->prefixlen == c->prefixlen) {
        v->drops += c->drops;
        if (c->last_drop_ns > v->last_drop_ns)
            v->last_drop_ns = c->last_drop_ns;
    }
    c->drops = 0;
}

/* IPv4: the per-CPU cache first (netsentinel.h), the trie on a miss. A
 * source the trie finds banned takes the slot (the drop is counted on the
 * ban, as without the cache); the next ones from it are counted in the slot.
 * Sources the trie passes are not cached: passing traffic costs one slot
 * compare more. */
static __always_inline int ns_drop_v4(u32 addr)
{
    u32 zero = 0;
    struct ns_ban_gen *g = ban_gen.lookup(&zero);
    if (!g || !g->gen)   /* not set up by user space yet: no cache */
        return ns_drop_if_banned(ns_live_ban4(addr));
    u64 gen = g->gen;
    u32 idx = (addr * g->mult) >> (32 - NS_BAN_CACHE_BITS);
    struct ns_ban_cache *c = ban_cache.lookup(&idx);
    if (!c)
        return ns_drop_if_banned(ns_live_ban4(addr));   /* an array always has the slot */
    if (c->gen == gen && c->addr == addr &&
        (!c->expires_ns || c->expires_ns > bpf_ktime_get_boot_ns())) {
        return ns_count_drop(&c->drops, &c->last_drop_ns, &c->last_drop_tick);
    }
    /* gen was read before this lookup: a ban-set change after it makes the
     * slot filled below stale (a miss next time), so no slot outlives a change. */
    struct ns_ban_value *v = ns_live_ban4(addr);
    if (!v)
        return XDP_PASS;
    if (c->addr != addr || c->prefixlen != v->prefixlen)
        ns_cache_flush(c);   /* same source, same ban: its count stays in the slot */
    c->gen = gen;
    c->addr = addr;
    c->prefixlen = v->prefixlen;
    c->expires_ns = v->expires_ns;
    return ns_drop_if_banned(v);
}

/* Ports, TCP flags, ICMP type, from the L4 header at l4 (bounds-checked). */
static __always_inline void ns_parse_l4(struct ns_pkt *p, void *l4, void *data_end)
{
    if (p->proto == IPPROTO_TCP) {
        u8 *t = l4;
        if ((void *)(t + NS_TCP_FLAGS_OFFSET + 1) > data_end)
            return;
        p->sport = ((u16)t[0] << 8) | t[1];
        p->dport = ((u16)t[2] << 8) | t[3];
        p->tcp_flags = t[NS_TCP_FLAGS_OFFSET];
        p->has_l4 = 1;
    } else if (p->proto == IPPROTO_UDP) {
        u8 *u = l4;
        if ((void *)(u + 4) > data_end)
            return;
        p->sport = ((u16)u[0] << 8) | u[1];
        p->dport = ((u16)u[2] << 8) | u[3];
        p->has_l4 = 1;
    } else if (p->proto == IPPROTO_ICMP || p->proto == IPPROTO_ICMPV6) {
        u8 *ic = l4;
        if ((void *)(ic + 1) > data_end)
            return;
        p->icmp_type = ic[0];
        p->has_l4 = 1;
    }
}

static __always_inline int ns_reflect_port(u16 port)
{
    return port == NS_REFLECT_PORT_CHARGEN || port == NS_REFLECT_PORT_DNS ||
           port == NS_REFLECT_PORT_NTP || port == NS_REFLECT_PORT_SNMP ||
           port == NS_REFLECT_PORT_CLDAP || port == NS_REFLECT_PORT_SSDP ||
           port == NS_REFLECT_PORT_MEMCACHED;
}

static __always_inline u64 ns_cfg(u32 slot)
{
    u64 *v = xdp_config.lookup(&slot);
    return v ? *v : 0;
}

/* One source's packet over NS_CFG_SRC_PPS in this window: tell user space
 * once per window, so it reads only the sources worth reading. */
static __always_inline void ns_source_window(struct ns_flow_stats *st, struct ns_pkt *p, u64 coarse)
{
    if (coarse - st->win.start_ns >= NS_WINDOW_NS) {
        st->win.start_ns = coarse;
        st->win.count = 0;
    }
    st->win.count += 1;
    u64 limit = ns_cfg(NS_CFG_SRC_PPS);
    if (!limit || st->win.count != limit)
        return;
    struct ns_xdp_event ev = {.type = NS_XEV_SOURCE, .family = p->family, .count = limit,
                              .elapsed_ns = coarse - st->win.start_ns};
    __builtin_memcpy(ev.addr, p->saddr, 16);
    xdp_events.ringbuf_output(&ev, sizeof(ev), 0);
}

/* Totals per destination port and protocol, whatever the source: what a
 * spoofed or many-source flood cannot spread thin. A window over its
 * threshold is reported when it is crossed (and at NS_AGG_STEP and
 * NS_AGG_STEP^2 times the threshold) and again, with its full count, when
 * it ends. */
static __always_inline void ns_update_agg(struct ns_pkt *p, u64 coarse)
{
    struct ns_agg_key k = {};
    u32 cfg, cnt;
    if (p->proto == IPPROTO_TCP && p->has_l4 && (p->tcp_flags & (NS_TCP_SYN | NS_TCP_ACK)) == NS_TCP_SYN) {
        k.kind = NS_AGG_SYN;
        cfg = NS_CFG_AGG_SYN_PPS;
        cnt = NS_CNT_TCP_SYN;
    } else if (p->proto == IPPROTO_UDP && p->has_l4) {
        k.kind = NS_AGG_UDP;
        cfg = NS_CFG_AGG_UDP_PPS;
        cnt = NS_CNT_UDP;
    } else if (p->proto == IPPROTO_ICMP || p->proto == IPPROTO_ICMPV6) {
        k.kind = NS_AGG_ICMP;
        cfg = NS_CFG_AGG_ICMP_PPS;
        cnt = NS_CNT_ICMP;
    } else {
        return;
    }
    ns_count(cnt);
    k.dport = k.kind == NS_AGG_ICMP ? 0 : p->dport;
    struct ns_agg_value *v = agg.lookup(&k);
    if (!v) {
        struct ns_agg_value init = {.win_start_ns = coarse};
        agg.update(&k, &init);
        v = agg.lookup(&k);
        if (!v)
            return;
    }
    u64 limit = ns_cfg(cfg);
    struct ns_xdp_event ev = {.kind = k.kind, .dport = k.dport};
    if (coarse - v->win_start_ns >= NS_WINDOW_NS) {
        /* Whichever CPU gets here first closes the window. No lock: CPUs
         * racing here may lose a few counts of the new window or, rarely,
         * report the ended one twice; both are harmless to a rate. */
        u64 ended = v->win_count, len = coarse - v->win_start_ns;
        v->win_start_ns = coarse;
        v->win_count = 0;
        if (limit && ended >= limit && len < 2 * NS_WINDOW_NS) {
            ev.type = NS_XEV_AGG_WINDOW;
            ev.count = ended;
            ev.elapsed_ns = len;
            xdp_events.ringbuf_output(&ev, sizeof(ev), 0);
        }
    }
    u64 n = __sync_fetch_and_add(&v->win_count, 1) + 1;
    /* Crossing the threshold, and NS_AGG_STEP and NS_AGG_STEP^2 times it:
     * a lower bound on the rate that grows as fast as the flood does, so a
     * big flood is known for what it is well before its first second ends. */
    if (limit && (n == limit || n == limit * NS_AGG_STEP || n == limit * NS_AGG_STEP * NS_AGG_STEP)) {
        ev.type = NS_XEV_AGG;
        ev.count = n;
        ev.elapsed_ns = coarse - v->win_start_ns;
        xdp_events.ringbuf_output(&ev, sizeof(ev), 0);
    }
}

static __always_inline void ns_update_stats(struct ns_pkt *p)
{
    struct ns_flow_key k = {.family = p->family};
    __builtin_memcpy(k.addr, p->saddr, 16);
    u64 now = bpf_ktime_get_ns();
    u64 coarse = bpf_ktime_get_coarse_ns();
    ns_update_agg(p, coarse);
    struct ns_flow_stats *st = flows.lookup(&k);
    if (!st) {
        struct ns_flow_stats init = {.first_seen_ns = now, .win = {.start_ns = coarse}};
        flows.update(&k, &init);
        st = flows.lookup(&k);
        if (!st)
            return;
    }
    ns_source_window(st, p, coarse);
    /* Per-CPU values: plain increments, no atomics; user space sums CPUs. */
    st->packets += 1;
    st->bytes += p->len;
    st->last_seen_ns = now;
    if (p->proto == IPPROTO_TCP) {
        st->tcp += 1;
        if ((p->tcp_flags & (NS_TCP_SYN | NS_TCP_ACK)) == NS_TCP_SYN)
            st->tcp_syn += 1;
        if (p->tcp_flags & NS_TCP_ACK)
            st->tcp_ack += 1;
    } else if (p->proto == IPPROTO_UDP) {
        st->udp += 1;
        if (p->dport == NS_PORT_SSDP)
            st->udp_ssdp += 1;
        if (ns_reflect_port(p->sport))
            st->udp_reflect += 1;
    } else if (p->proto == IPPROTO_ICMP || p->proto == IPPROTO_ICMPV6) {
        st->icmp += 1;
        if ((p->proto == IPPROTO_ICMP && p->icmp_type == NS_ICMP_ECHO_REQUEST) ||
            (p->proto == IPPROTO_ICMPV6 && p->icmp_type == NS_ICMPV6_ECHO_REQUEST))
            st->icmp_echo += 1;
    } else {
        st->other += 1;
    }
    if (p->has_l4 && (p->proto == IPPROTO_TCP || p->proto == IPPROTO_UDP)) {
        u32 zero = 0;
        u64 *ep = flow_epoch.lookup(&zero);
        u64 e = ep ? *ep : 0;
        u32 slot = e & 1;
        if (st->dport_epoch[slot] != e) {
            st->dport_epoch[slot] = e;
            st->dport_bits[slot] = 0;
        }
        st->dport_bits[slot] |= 1ULL << (p->dport & 63);
    }
}

static __always_inline int ns_rule_matches(struct ns_rule *r, struct ns_pkt *p)
{
    if (r->family && r->family != p->family)
        return 0;
    if (r->proto && r->proto != p->proto)
        return 0;
    u32 *src = (u32 *)r->src, *mask = (u32 *)r->mask, *a = (u32 *)p->saddr;
    if ((a[0] & mask[0]) != src[0] || (a[1] & mask[1]) != src[1] ||
        (a[2] & mask[2]) != src[2] || (a[3] & mask[3]) != src[3])
        return 0;
    int ports = r->sport_min != 0 || r->sport_max != 65535 || r->dport_min != 0 || r->dport_max != 65535;
    if (ports || r->tcp_flags_mask || r->icmp_type_set) {
        if (!p->has_l4)
            return 0;
        if (p->sport < r->sport_min || p->sport > r->sport_max ||
            p->dport < r->dport_min || p->dport > r->dport_max)
            return 0;
        if ((p->tcp_flags & r->tcp_flags_mask) != r->tcp_flags_value)
            return 0;
        if (r->icmp_type_set && p->icmp_type != r->icmp_type)
            return 0;
    }
    return 1;
}

_Static_assert((NS_MAX_RULES & (NS_MAX_RULES - 1)) == 0, "NS_MAX_RULES must be a power of two");

/* NS_RULE_RATELIMIT: take a token from the slot's bucket; 1 = under the cap. */
static __always_inline int ns_take_token(struct ns_rule *r, u32 idx)
{
    struct ns_bucket *b = rule_buckets.lookup(&idx);
    if (!b || !r->cost_ns)
        return 1;   /* an array always has the slot; a zero cost is no cap */
    u64 now = bpf_ktime_get_ns();
    u64 cap = (u64)r->cost_ns * (r->burst ? r->burst : 1);
    u64 credit = b->credit_ns + (now - b->last_ns);
    if (credit > cap || now < b->last_ns)
        credit = cap;
    b->last_ns = now;
    if (credit < r->cost_ns) {
        b->credit_ns = credit;
        return 0;
    }
    b->credit_ns = credit - r->cost_ns;
    return 1;
}

static __always_inline int ns_apply_rules(struct ns_pkt *p)
{
    u32 key = NS_RULE_STATE_ACTIVE;
    u32 *active = rule_state.lookup(&key);
    if (!active)
        return XDP_PASS;   /* an array always has the slot */
    /* Masked, not branched on: one verifier path for both sets. */
    u32 set = *active & 1;
    key = NS_RULE_STATE_COUNT0 + set;
    u32 *cnt = rule_state.lookup(&key);
    u32 n = cnt ? *cnt : 0;
    u32 base = set * NS_MAX_RULES;
    for (u32 i = 0; i < NS_MAX_RULES; i++) {
        if (i >= n)
            break;
        /* OR, not +: keeps i the loop's only counter, whose bound the
         * verifier sees (NS_MAX_RULES is a power of two, checked below). */
        u32 idx = base | i;
        struct ns_rule *r = rules.lookup(&idx);
        if (!r || !r->action || !ns_rule_matches(r, p))
            continue;
        if (r->action == NS_RULE_RATELIMIT && ns_take_token(r, idx))
            return XDP_PASS;   /* under the cap: passes, not a hit */
        u64 *hits = rule_hits.lookup(&idx);
        if (hits)
            *hits += 1;
        if (r->action == NS_RULE_DROP || r->action == NS_RULE_RATELIMIT) {
            ns_count(NS_CNT_RULE_DROPS);
            return XDP_DROP;
        }
        return XDP_PASS;   /* pass-and-count: first match wins */
    }
    return XDP_PASS;
}

/* NS_CNT_XDP_SEEN counts the frames no ban dropped (user space adds
 * NS_CNT_XDP_DROPS for every frame seen): a dropped frame counts once, one
 * per-CPU count less on the drop path (the XDP cost issue). */
static __always_inline int ns_seen(void)
{
    ns_count(NS_CNT_XDP_SEEN);
    return XDP_PASS;
}

/* The ingress filter's body, shared by the XDP and the TCX program: the
 * frame from its Ethernet header (data..data_end), len its full length.
 * Returns XDP_DROP or XDP_PASS; the TC wrapper translates. */
static __always_inline int ns_filter(void *data, void *data_end, u32 len)
{
    struct ethhdr *eth = data;
    void *cursor = eth + 1;

    if (cursor > data_end)
        return XDP_PASS;

    /* On the TC path the kernel has usually taken the outer VLAN tag into
     * skb->vlan_tci already; a tag still in the frame is walked either way. */
    u16 proto = eth->h_proto;
#pragma unroll
    for (int i = 0; i < 2; i++) {
        if (proto != htons(ETH_P_8021Q) && proto != htons(ETH_P_8021AD))
            break;
        struct ns_vlan_hdr *vh = cursor;
        if ((void *)(vh + 1) > data_end)
            return ns_seen();
        proto = vh->encap_proto;
        cursor = vh + 1;
    }

    struct ns_pkt pkt = {.len = len};
    if (proto == htons(ETH_P_IP)) {
        struct iphdr *ip = cursor;
        if ((void *)(ip + 1) > data_end)
            return ns_seen();
        if (ns_drop_v4(ip->saddr) == XDP_DROP)
            return XDP_DROP;
        pkt.family = NS_FAMILY_V4;
        pkt.proto = ip->protocol;
        __builtin_memcpy(pkt.saddr, &ip->saddr, 4);
        /* Only the first fragment carries the L4 header. */
        if (ip->ihl >= 5 && !(ip->frag_off & htons(NS_IP_FRAG_OFFSET_MASK)))
            ns_parse_l4(&pkt, (void *)ip + ip->ihl * 4, data_end);
    } else if (proto == htons(ETH_P_IPV6)) {
        struct ipv6hdr *ip6 = cursor;
        if ((void *)(ip6 + 1) > data_end)
            return ns_seen();
        if (ns_drop_if_banned(ns_live_ban6(&ip6->saddr)) == XDP_DROP)
            return XDP_DROP;
        pkt.family = NS_FAMILY_V6;
        pkt.proto = ip6->nexthdr;   /* extension headers are not walked */
        __builtin_memcpy(pkt.saddr, &ip6->saddr, 16);
        ns_parse_l4(&pkt, ip6 + 1, data_end);
    } else {
        return ns_seen();
    }
    ns_count(NS_CNT_XDP_SEEN);
    ns_update_stats(&pkt);
    return ns_apply_rules(&pkt);
}

int ns_xdp_filter(struct xdp_md *ctx)
{
    void *data = (void *)(long)ctx->data;
    void *data_end = (void *)(long)ctx->data_end;
    return ns_filter(data, data_end, (u32)(data_end - data));
}

/* The same filter as a TCX ingress program, for interfaces where native XDP
 * is refused and generic XDP would change (or fail to change, and warn about)
 * the device's offloads: see netsentinel/kernel/ingress.py. */
int ns_tc_filter(struct __sk_buff *ctx)
{
    /* Direct access reaches only the linear head; the headers we read fit
     * in NS_TC_PULL_LEN, so pull that much (never past the packet's end). */
    u32 want = ctx->len < NS_TC_PULL_LEN ? ctx->len : NS_TC_PULL_LEN;
    if (ctx->data_end - ctx->data < want)
        bpf_skb_pull_data(ctx, want);
    void *data = (void *)(long)ctx->data;
    void *data_end = (void *)(long)ctx->data_end;
    if (ns_filter(data, data_end, ctx->len) == XDP_DROP)
        return NS_TC_ACT_SHOT;
    /* TCX_NEXT, not TC_ACT_OK: OK (TCX_PASS) would end the TCX chain and
     * skip programs attached after ours (another tool's, or our own egress
     * accounting's peers); NEXT passes the packet when nothing else decides. */
    return NS_TCX_NEXT;
}

/* ---- containment (issue 12), see netsentinel.h */
NS_MAP("hash", u32, struct ns_contain_value, contain_pids, NS_MAX_CONTAINED, BPF_F_NO_PREALLOC);
NS_MAP("hash", struct ns_exe_key, struct ns_contain_value, contain_exes, NS_MAX_CONTAINED_EXES,
       BPF_F_NO_PREALLOC);
NS_MAP("hash", u64, struct ns_contain_value, contain_socks, NS_MAX_CONTAINED, BPF_F_NO_PREALLOC);

static __always_inline int ns_contain_live(struct ns_contain_value *v)
{
    return v && (!v->expires_ns || v->expires_ns > bpf_ktime_get_boot_ns());
}

#ifdef NS_OFF_TASK_MM
/* current->mm->exe_file->f_inode: {i_ino, i_sb->s_dev}. 0 for a kernel
 * thread or anything unreadable (then only the tgid entry can match). */
static __always_inline int ns_exe_of_current(struct ns_exe_key *k)
{
    u64 task = bpf_get_current_task();
    void *mm = 0, *file = 0, *inode = 0, *sb = 0;
    if (bpf_probe_read_kernel(&mm, sizeof(mm), (void *)(task + NS_OFF_TASK_MM)) || !mm)
        return 0;
    if (bpf_probe_read_kernel(&file, sizeof(file), mm + NS_OFF_MM_EXE_FILE) || !file)
        return 0;
    if (bpf_probe_read_kernel(&inode, sizeof(inode), file + NS_OFF_FILE_INODE) || !inode)
        return 0;
    if (bpf_probe_read_kernel(&k->ino, sizeof(k->ino), inode + NS_OFF_INODE_INO))
        return 0;
    if (bpf_probe_read_kernel(&sb, sizeof(sb), inode + NS_OFF_INODE_SB) || !sb)
        return 0;
    return bpf_probe_read_kernel(&k->dev, sizeof(k->dev), sb + NS_OFF_SB_DEV) == 0;
}
#endif

/* The live entry containing the current process: by tgid, else by its
 * executable. */
static __always_inline struct ns_contain_value *ns_contained(u32 tgid)
{
    struct ns_contain_value *v = contain_pids.lookup(&tgid);
    if (ns_contain_live(v))
        return v;
#ifdef NS_OFF_TASK_MM
    struct ns_exe_key k = {};
    if (ns_exe_of_current(&k)) {
        v = contain_exes.lookup(&k);
        if (ns_contain_live(v))
            return v;
    }
#endif
    return NULL;
}

/* cgroup verdict for a contained process: 0 refuses (EPERM), counted on the entry. */
static __always_inline int ns_allow_unless_contained(void)
{
    struct ns_contain_value *v = ns_contained(bpf_get_current_pid_tgid() >> 32);
    if (!v)
        return 1;
    __sync_fetch_and_add(&v->blocked, 1);
    v->last_blocked_ns = bpf_ktime_get_ns();
    return 0;
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
    if (!ns_allow_unless_contained())
        return 0;
    return ns_allow_unless_banned(ns_live_ban4(addr), counter);
}

static __always_inline int ns_allow_v6(struct bpf_sock_addr *ctx, u32 counter)
{
    u32 a0 = ctx->user_ip6[0], a1 = ctx->user_ip6[1], a2 = ctx->user_ip6[2], a3 = ctx->user_ip6[3];
    if (a0 == 0 && a1 == 0 && a2 == htonl(0xffff))
        return ns_allow_v4(a3, counter);
    if (!ns_allow_unless_contained())
        return 0;
    u8 addr[16];
    __builtin_memcpy(&addr[0], &a0, 4);
    __builtin_memcpy(&addr[4], &a1, 4);
    __builtin_memcpy(&addr[8], &a2, 4);
    __builtin_memcpy(&addr[12], &a3, 4);
    return ns_allow_unless_banned(ns_live_ban6(addr), counter);
}

int ns_connect4(struct bpf_sock_addr *ctx) { return ns_allow_v4(ctx->user_ip4, NS_CNT_CONNECT_BLOCKED); }
int ns_connect6(struct bpf_sock_addr *ctx) { return ns_allow_v6(ctx, NS_CNT_CONNECT_BLOCKED); }
int ns_sendmsg4(struct bpf_sock_addr *ctx) { return ns_allow_v4(ctx->user_ip4, NS_CNT_SENDMSG_BLOCKED); }
int ns_sendmsg6(struct bpf_sock_addr *ctx) { return ns_allow_v6(ctx, NS_CNT_SENDMSG_BLOCKED); }

/* BPF_CGROUP_INET_SOCK_CREATE: a contained process gets no new inet socket
 * (SOCK_RAW for a SYN scan, a listening socket for a bind shell); 0 = EPERM.
 * AF_PACKET sockets do not pass this hook: the outbound monitor reports them. */
int ns_sock_create(struct bpf_sock *sk) { return ns_allow_unless_contained(); }

/* BPF_CGROUP_INET_EGRESS and _INGRESS: the packets of sockets a process
 * already had when it was contained (an established reverse shell, a
 * miner's pool connection), by socket cookie (contain_socks, filled by the
 * loader through pidfd_getfd + SO_COOKIE), are dropped both ways. One hash
 * lookup per packet while the map is empty. */
int ns_contain_skb(struct __sk_buff *skb)
{
    u64 cookie = bpf_get_socket_cookie(skb);
    struct ns_contain_value *v = contain_socks.lookup(&cookie);
    if (!ns_contain_live(v))
        return 1;
    __sync_fetch_and_add(&v->blocked, 1);
    v->last_blocked_ns = bpf_ktime_get_ns();
    return 0;
}

#ifdef NS_TP_FORK_CHILD_PID
/* sched:sched_process_fork, in the parent: a child of a contained process
 * (by tgid or by executable) is contained until the same expiry. Offsets
 * into the record come from the tracepoint's format file (-D). A child
 * thread gets an entry too (its tid), dropped at its exit. */
int ns_contain_fork(void *ctx)
{
    u32 parent = bpf_get_current_pid_tgid() >> 32;
    struct ns_contain_value *v = ns_contained(parent);
    if (!v)
        return 0;
    u32 child = 0;
    bpf_probe_read_kernel(&child, sizeof(child), ctx + NS_TP_FORK_CHILD_PID);
    if (!child)
        return 0;
    struct ns_contain_value c = {.expires_ns = v->expires_ns, .origin = v->origin ? v->origin : parent,
                                 .inherited = 1};
    contain_pids.update(&child, &c);
    return 0;
}

/* sched:sched_process_exit, in the exiting thread: drop its own entry (a
 * thread's), and the process's once the whole group is dead, so a pid
 * reused later by an unrelated process is not contained. */
int ns_contain_exit(void *ctx)
{
    u64 id = bpf_get_current_pid_tgid();
    u32 tid = (u32)id, tgid = id >> 32;
    if (tid != tgid)
        contain_pids.delete(&tid);
#ifdef NS_TP_EXIT_GROUP_DEAD
    u8 dead = 0;
    bpf_probe_read_kernel(&dead, sizeof(dead), ctx + NS_TP_EXIT_GROUP_DEAD);
#else
    u8 dead = tid == tgid;   /* older kernels: the leader's exit stands for the group's */
#endif
    if (dead)
        contain_pids.delete(&tgid);
    return 0;
}
#endif
