/* stack_tcp.bpf.c - TCP health per connection (follows stack.bpf.c and
 * stack_path.bpf.c in one program; stack_drops.bpf.c comes last). */

/* ---------------------------------------------------------------- TCP health
 * Entries are made on a TCP state change (so only for real connections, not
 * listeners) and updated by the per-connection tracepoints; the loader
 * reads them each interval and deletes the closed ones after their final
 * report. LRU: a host with more connections than NS_MAX_CONNS loses the
 * least recently active, never a new one. */
#ifdef NS_STACK_TCP
BPF_TABLE("lru_hash", u64, struct ns_tcp_health, tcp_conns, NS_MAX_CONNS);
/* Closed connections until the loader's next read, moved out of tcp_conns at
 * CLOSE so that a new socket at the same address cannot overwrite them
 * before their final report (sockets are reused at once under churn). */
BPF_HASH(tcp_closed, struct ns_closed_key, struct ns_tcp_health, NS_MAX_CLOSED);
BPF_PERCPU_ARRAY(tcp_zero, struct ns_tcp_health, 1);
BPF_HASH(accepts, struct ns_accept_key, u64, NS_MAX_ACCEPTS);

static __always_inline void ns_bump_accept(struct ns_accept_key *key)
{
    u64 one = 1, *v = accepts.lookup(key);
    if (v) {
        __sync_fetch_and_add(v, 1);
    } else if (accepts.insert(key, &one) != 0) {
        v = accepts.lookup(key);
        if (v)
            __sync_fetch_and_add(v, 1);
        else
            ns_miss(NS_MISS_ACCEPTS_FULL);
    }
}

TRACEPOINT_PROBE(sock, inet_sock_set_state)
{
    if (args->protocol != IPPROTO_TCP)
        return 0;
    int ns = args->newstate;
    if (args->oldstate == BPF_TCP_SYN_RECV && ns == BPF_TCP_ESTABLISHED) {
        /* An accepted socket: its source side is local, its destination the client. */
        struct ns_accept_key a = {};
        a.lport = args->sport;
        if (args->family == NS_AF_INET6) {
            a.family = 6;
            __builtin_memcpy(a.raddr, args->daddr_v6, 16);
            __builtin_memcpy(a.laddr, args->saddr_v6, 16);
        } else {
            a.family = 4;
            __builtin_memcpy(a.raddr, args->daddr, 4);
            __builtin_memcpy(a.laddr, args->saddr, 4);
        }
        ns_bump_accept(&a);
    }
    u64 key = (u64)args->skaddr;
    struct ns_tcp_health *h = tcp_conns.lookup(&key);
    /* A closed entry not yet collected whose socket memory was reused by a
     * new connection: start over (its final report is lost; rare, as the
     * loader collects closed entries every interval). */
    if (!h || (h->closed && ns != BPF_TCP_CLOSE)) {
        /* A listener or a socket that never connected is not a connection. */
        if (ns == BPF_TCP_LISTEN || ns == BPF_TCP_CLOSE)
            return 0;
        u32 zero = 0;
        struct ns_tcp_health *z = tcp_zero.lookup(&zero);
        if (!z)
            return 0;
        z->first_ns = bpf_ktime_get_ns();
        /* An accepted socket's first change is SYN_RECV -> ESTABLISHED. */
        z->inbound = ns != BPF_TCP_SYN_SENT;
        if (ns == BPF_TCP_SYN_SENT) {
            /* connect() runs in the caller's context: the process is known. */
            u64 pt = bpf_get_current_pid_tgid();
            z->pid = pt >> 32;
            z->uid = (u32)bpf_get_current_uid_gid();
            bpf_get_current_comm(&z->comm, sizeof(z->comm));
        } else {
            z->pid = 0;
            z->uid = 0;
            __builtin_memset(z->comm, 0, sizeof(z->comm));
        }
#ifdef NS_HAVE_SKB_OFFSETS
        void *net = 0;
        z->netns = 0;
        bpf_probe_read_kernel(&net, sizeof(net), (void *)key + NS_SK_NET);
        if (net)
            bpf_probe_read_kernel(&z->netns, sizeof(z->netns), net + NS_NET_INUM);
#endif
        tcp_conns.update(&key, z);
        h = tcp_conns.lookup(&key);
        if (!h)
            return 0;
    }
    u64 now = bpf_ktime_get_ns();
    h->last_ns = now;
    u32 i = h->state_changes & (NS_TCP_STATE_LOG - 1);
    h->states[i] = ns;
    h->state_ns[i] = now;
    h->state_changes++;
    h->state = ns;
    /* Ports and addresses are final from ESTABLISHED on (sport is 0 in SYN_SENT). */
    h->family = args->family;
    h->sport = args->sport;
    h->dport = args->dport;
    if (args->family == NS_AF_INET6) {
        __builtin_memcpy(h->saddr, args->saddr_v6, 16);
        __builtin_memcpy(h->daddr, args->daddr_v6, 16);
    } else {
        __builtin_memcpy(h->saddr, args->saddr, 4);
        __builtin_memcpy(h->daddr, args->daddr, 4);
    }
    if (ns == BPF_TCP_CLOSE) {
        h->closed = 1;
        struct ns_closed_key ck = {.sk = key, .first_ns = h->first_ns};
        if (tcp_closed.insert(&ck, h) == 0) {
            tcp_conns.delete(&key);
        } else if (!h->probes && !h->retransmits && !h->rst_sent && !h->rst_recv && !h->queue_drops) {
            /* Full, and a quiet connection (no segment in, no retransmit,
             * no reset, no drop): its connection event already tells of it.
             * Under a connect flood these are nearly all closes; kept, they
             * filled the LRU (evicting live connections' health) and the
             * loader read and deleted each one (docs/benchmarks.md §3). */
            tcp_conns.delete(&key);
            ns_miss(NS_MISS_QUIET_CLOSED);
        } else {   /* full: it stays here, where a reused socket may restart it */
            ns_miss(NS_MISS_CLOSED_FULL);
        }
    }
    return 0;
}

TRACEPOINT_PROBE(tcp, tcp_probe)
{
#ifdef NS_STACK_PATH
    ns_path_step((void *)args->skbaddr, NS_HOOK_TCP, 0);
#endif
    u64 key = (u64)args->skaddr;
    struct ns_tcp_health *h = tcp_conns.lookup(&key);
    if (!h)
        return 0;
    h->srtt_us = args->srtt;
    h->cwnd = args->snd_cwnd;
    h->ssthresh = args->ssthresh;
    h->probes++;
    h->last_ns = bpf_ktime_get_ns();
    return 0;
}

TRACEPOINT_PROBE(tcp, tcp_retransmit_skb)
{
    u64 key = (u64)args->skaddr;
    struct ns_tcp_health *h = tcp_conns.lookup(&key);
    if (h) {
        __sync_fetch_and_add(&h->retransmits, 1);
        h->last_ns = bpf_ktime_get_ns();
    }
    return 0;
}

TRACEPOINT_PROBE(tcp, tcp_send_reset)
{
    u64 key = (u64)args->skaddr;   /* NULL for a reset answering no socket */
    struct ns_tcp_health *h = key ? tcp_conns.lookup(&key) : 0;
    if (h)
        __sync_fetch_and_add(&h->rst_sent, 1);
    return 0;
}

TRACEPOINT_PROBE(tcp, tcp_receive_reset)
{
    u64 key = (u64)args->skaddr;
    struct ns_tcp_health *h = tcp_conns.lookup(&key);
    if (h)
        __sync_fetch_and_add(&h->rst_recv, 1);
    return 0;
}
#ifdef NS_STACK_ACCEPT
/* accept() ran in the process that takes the connection: follow the fd it
 * returns to its socket (current->files->fdt->fd[ret]->private_data->sk,
 * offsets from BTF) and give that connection's entry its process. The
 * pointer is only a key: a file that is not that socket finds no entry. */
static __always_inline int ns_accepted(long fd)
{
    if (fd < 0)
        return 0;
    void *task = (void *)bpf_get_current_task();
    void *files = 0, *fdt = 0, *fds = 0, *file = 0, *sock = 0;
    u32 max_fds = 0;
    u64 sk = 0;
    bpf_probe_read_kernel(&files, sizeof(files), task + NS_TASK_FILES);
    if (!files)
        return 0;
    bpf_probe_read_kernel(&fdt, sizeof(fdt), files + NS_FILES_FDT);
    if (!fdt)
        return 0;
    bpf_probe_read_kernel(&max_fds, sizeof(max_fds), fdt + NS_FDT_MAX_FDS);
    if ((u64)fd >= max_fds)
        return 0;
    bpf_probe_read_kernel(&fds, sizeof(fds), fdt + NS_FDT_FD);
    if (!fds)
        return 0;
    bpf_probe_read_kernel(&file, sizeof(file), fds + fd * sizeof(void *));
    if (!file)
        return 0;
    bpf_probe_read_kernel(&sock, sizeof(sock), file + NS_FILE_PRIVATE_DATA);
    if (!sock)
        return 0;
    bpf_probe_read_kernel(&sk, sizeof(sk), sock + NS_SOCKET_SK);
    struct ns_tcp_health *h = tcp_conns.lookup(&sk);
    if (!h || !h->inbound || h->pid)
        return 0;
    h->pid = bpf_get_current_pid_tgid() >> 32;
    h->uid = (u32)bpf_get_current_uid_gid();
    bpf_get_current_comm(&h->comm, sizeof(h->comm));
    h->last_ns = bpf_ktime_get_ns();
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_exit_accept4)
{
    return ns_accepted(args->ret);
}

TRACEPOINT_PROBE(syscalls, sys_exit_accept)
{
    return ns_accepted(args->ret);
}
#endif
#endif   /* NS_STACK_TCP */
