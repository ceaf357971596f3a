/* conn_monitor.c - outbound TCP connection monitor.
 *
 * Two capture paths, one compiled per load (netsentinel/kernel/monitor.py;
 * at run time --capture auto tries the kprobe path first, then this one):
 *  - without NS_CAPTURE_KPROBE: tracepoint sock:inet_sock_set_state, transition to SYN_SENT.
 *    Stable ABI (a tracepoint format), works without kprobes; it fires in
 *    the connecting task's context after the route (so saddr) is chosen but
 *    before the source port is, so sport is reported as unknown (0).
 *  - NS_CAPTURE_KPROBE: kprobes on tcp_v4_connect / tcp_v6_connect reading
 *    the destination from the uaddr argument. On entry the socket's own
 *    address fields are not filled in yet, so only uaddr is read (as a UAPI
 *    sockaddr_in/sockaddr_in6); saddr is unknown in this mode.
 * Settings arrive as -D flags built from validated integers.
 *
 * Events leave through a BPF ring buffer (kernel >= 5.8): one buffer shared
 * by every CPU, read in batches, and a full buffer is counted here, at the
 * moment of the loss, in conn_lost (the perf buffer only reported a loss when
 * a later event arrived on the same CPU, so many went unreported). With
 * NS_CONN_PERF the perf buffer is used instead (older kernels).
 *
 * Wake-ups: a connect of a process the loader has already read in /proc
 * (conn_known holds its tgid and start) goes in without waking the loader,
 * which reads such connects in batches at its next turn (it polls with a
 * timeout), where a wake-up per connect cost it more than the connect's own
 * handling at 1,000/s. Any other connect wakes it at once (a short-lived
 * process is read while it lives), and so does every NS_CONN_WAKE_EVERY-th
 * quiet one of a CPU (a quarter of the ring, shared by the CPUs: a burst of
 * known processes' connects is read before the ring fills). The process's start comes from task_struct fields at offsets from
 * the running kernel's BTF (-DNS_OFF_TASK_*, kernel/btf.py CONN_OFFSETS);
 * without them it is 0 and every connect wakes the loader.
 */
#include "netsentinel.h"

#ifdef NS_CONN_PERF
BPF_PERF_OUTPUT(conn_events);
#else
#ifndef NS_CONN_RING_PAGES
#define NS_CONN_RING_PAGES 128
#endif
BPF_RINGBUF_OUTPUT(conn_events, NS_CONN_RING_PAGES);
BPF_PERCPU_ARRAY(conn_lost, u64, 1);
/* A full ring buffer folds a connect into its (process, destination, port)
 * entry here instead of losing it: a connect flood (16 processes flat out
 * outrun any user-space reader) becomes one event per process and
 * destination per poll, with its count, and leaves the ring room for every
 * other process's connections. Lost only when a new entry finds no room. */
BPF_HASH(conn_folds, struct ns_conn_fold_key, struct ns_conn_fold, NS_MAX_CONN_FOLDS);
BPF_TABLE("lru_hash", u32, u64, conn_known, NS_MAX_CONN_KNOWN);
BPF_PERCPU_ARRAY(conn_quiet, u64, 1);   /* connects put in without a wake-up, per CPU */
#ifndef NS_CONN_WAKE_EVERY
#define NS_CONN_WAKE_EVERY 64
#endif
#endif

/* Where the ring's record goes without a wake-up (see the top). */
static __always_inline u64 ns_wake_flags(struct ns_conn_event *e)
{
#ifdef NS_CONN_PERF
    return 0;
#else
    if (e->start_ns == 0)
        return BPF_RB_FORCE_WAKEUP;
    u64 *known = conn_known.lookup(&e->pid);
    if (!known || *known != e->start_ns)
        return BPF_RB_FORCE_WAKEUP;
    /* (BCC 0.26 has no ringbuf_query: the ring's fill is not known here.) */
    int zero = 0;
    u64 *quiet = conn_quiet.lookup(&zero);
    if (quiet && ++*quiet % NS_CONN_WAKE_EVERY == 0)
        return BPF_RB_FORCE_WAKEUP;
    return BPF_RB_NO_WAKEUP;
#endif
}

static __always_inline void ns_conn_submit(void *ctx, struct ns_conn_event *e)
{
#ifdef NS_CONN_PERF
    conn_events.perf_submit(ctx, e, sizeof(*e));
#else
    if (conn_events.ringbuf_output(e, sizeof(*e), ns_wake_flags(e)) == 0)
        return;
    struct ns_conn_fold_key k = {.pid = e->pid, .family = e->family, .dport = e->dport};
    __builtin_memcpy(k.daddr, e->daddr, 16);
    struct ns_conn_fold *f = conn_folds.lookup(&k);
    if (!f) {
        struct ns_conn_fold nf = {.first = *e, .last_ns = e->ts_ns, .count = 1};
        if (conn_folds.insert(&k, &nf) == 0)
            return;
        f = conn_folds.lookup(&k);   /* another CPU inserted it first, or the map is full */
    }
    if (f) {
        __sync_fetch_and_add(&f->count, 1);
        f->last_ns = e->ts_ns;
        return;
    }
    int zero = 0;
    u64 *n = conn_lost.lookup(&zero);
    if (n)
        *n += 1;   /* this CPU's own slot: no atomic needed */
#endif
}

static __always_inline void ns_fill_task(struct ns_conn_event *e, u8 mode)
{
    u64 pid_tgid = bpf_get_current_pid_tgid();
    e->ts_ns = bpf_ktime_get_ns();
    e->pid = pid_tgid >> 32;
    e->tid = (u32)pid_tgid;
    e->uid = (u32)bpf_get_current_uid_gid();
    e->mode = mode;
    bpf_get_current_comm(&e->comm, sizeof(e->comm));
#ifdef NS_OFF_TASK_GROUP_LEADER
    /* current->group_leader->start_boottime: the start /proc/PID/stat shows
     * (an exec by another thread hands the leader's start to the new leader). */
    void *task = (void *)bpf_get_current_task();
    void *leader = NULL;
    if (bpf_probe_read_kernel(&leader, sizeof(leader), task + NS_OFF_TASK_GROUP_LEADER) == 0 && leader)
        bpf_probe_read_kernel(&e->start_ns, sizeof(e->start_ns), leader + NS_OFF_TASK_START_BOOTTIME);
#endif
}

#ifdef NS_CAPTURE_KPROBE

int ns_kprobe_v4(struct pt_regs *ctx)
{
    struct sockaddr_in sin = {};
    void *uaddr = (void *)PT_REGS_PARM2(ctx);
    if (bpf_probe_read_kernel(&sin, sizeof(sin), uaddr) != 0)
        return 0;
    if (sin.sin_family != NS_AF_INET)
        return 0;
    struct ns_conn_event e = {};
    ns_fill_task(&e, NS_MODE_KPROBE);
    e.family = NS_AF_INET;
    e.dport = ntohs(sin.sin_port);
    __builtin_memcpy(e.daddr, &sin.sin_addr.s_addr, 4);
    ns_conn_submit(ctx, &e);
    return 0;
}

int ns_kprobe_v6(struct pt_regs *ctx)
{
    struct sockaddr_in6 sin6 = {};
    void *uaddr = (void *)PT_REGS_PARM2(ctx);
    if (bpf_probe_read_kernel(&sin6, sizeof(sin6), uaddr) != 0)
        return 0;
    if (sin6.sin6_family != NS_AF_INET6)
        return 0;
    /* A v4-mapped destination is handed on to tcp_v4_connect, whose probe
     * reports it: skip it here so it is reported once. */
    if (sin6.sin6_addr.in6_u.u6_addr32[0] == 0 && sin6.sin6_addr.in6_u.u6_addr32[1] == 0 &&
        sin6.sin6_addr.in6_u.u6_addr32[2] == htonl(0xffff))
        return 0;
    struct ns_conn_event e = {};
    ns_fill_task(&e, NS_MODE_KPROBE);
    e.family = NS_AF_INET6;
    e.dport = ntohs(sin6.sin6_port);
    __builtin_memcpy(e.daddr, &sin6.sin6_addr, 16);
    ns_conn_submit(ctx, &e);
    return 0;
}

#else

TRACEPOINT_PROBE(sock, inet_sock_set_state)
{
    if (args->protocol != IPPROTO_TCP || args->newstate != BPF_TCP_SYN_SENT)
        return 0;
    struct ns_conn_event e = {};
    ns_fill_task(&e, NS_MODE_TRACEPOINT);
    e.family = args->family;
    e.dport = args->dport;   /* the tracepoint already gives host order */
    e.sport = args->sport;
    e.has_saddr = 1;
    if (args->family == NS_AF_INET) {
        __builtin_memcpy(e.saddr, args->saddr, 4);
        __builtin_memcpy(e.daddr, args->daddr, 4);
    } else if (args->family == NS_AF_INET6) {
        __builtin_memcpy(e.saddr, args->saddr_v6, 16);
        __builtin_memcpy(e.daddr, args->daddr_v6, 16);
    } else {
        return 0;
    }
    ns_conn_submit(args, &e);
    return 0;
}

#endif
