/* outbound.bpf.c - who opens raw and packet sockets.
 *
 * Raw (SOCK_RAW) and packet (AF_PACKET) sockets send packets that never pass
 * through connect(): nmap -sS, masscan, hping3 and home-made SYN scanners are
 * invisible to conn_monitor.bpf.c. socket() itself is the one moment every
 * such tool must go through, so the syscall tracepoints syscalls:sys_enter_socket
 * and sys_exit_socket (stable tracepoint formats; no kprobes needed) watch it:
 * enter remembers the arguments of an interesting call per thread, exit reports
 * it when the socket was really created. Everything else (TCP, UDP, netlink,
 * unix sockets: nearly all calls) is dropped in the kernel at enter.
 *
 * Own file and structs (bpf/netsentinel.h belongs to the enforcement side).
 * Only UAPI values and tracepoint formats are used.
 */
#include <uapi/linux/bpf.h>

#define NS_AF_INET 2
#define NS_AF_INET6 10
#define NS_AF_PACKET 17
#define NS_SOCK_TYPE_MASK 0xf   /* type also carries SOCK_NONBLOCK / SOCK_CLOEXEC */
#define NS_SOCK_RAW 3
#define NS_SOCK_PACKET 10       /* obsolete AF_INET packet socket: still a raw sender */

#ifndef NS_RAW_PENDING
#define NS_RAW_PENDING 4096
#endif
#ifndef NS_EXEC_PATHS
#define NS_EXEC_PATHS 16384
#endif
#define NS_PATH_LEN 128

/* The path each process was started with (sched:sched_process_exec), kept
 * per tgid in an LRU map: a ping or a one-shot scanner has often exited
 * before its event is read from /proc, and its comm is whatever it chose. */
struct ns_exec_path {
    char path[NS_PATH_LEN];
};

struct ns_raw_args {
    u32 family;
    u32 type;
    u32 protocol;
};

/* One raw or packet socket that was created. */
struct ns_raw_event {
    u64 ts_ns;
    u32 pid;        /* tgid */
    u32 tid;
    u32 uid;
    s32 fd;         /* what socket() returned */
    u32 family;
    u32 type;       /* as passed, flags included */
    u32 protocol;   /* as passed: packet sockets give an ethertype in network order */
    char comm[16];
    char exec_path[NS_PATH_LEN];   /* empty: started before the loader */
};

BPF_HASH(raw_pending, u32, struct ns_raw_args, NS_RAW_PENDING);
BPF_TABLE("lru_hash", u32, struct ns_exec_path, exec_paths, NS_EXEC_PATHS);
BPF_PERF_OUTPUT(raw_events);
BPF_PERCPU_ARRAY(raw_scratch, struct ns_raw_event, 1);   /* too big for the BPF stack */

TRACEPOINT_PROBE(sched, sched_process_exec)
{
    u32 tgid = bpf_get_current_pid_tgid() >> 32;
    struct ns_exec_path p = {};
    TP_DATA_LOC_READ_STR(&p.path, filename, sizeof(p.path));
    exec_paths.update(&tgid, &p);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_enter_socket)
{
    u32 family = (u32)args->family;
    u32 type = (u32)args->type & NS_SOCK_TYPE_MASK;
    int inet = family == NS_AF_INET || family == NS_AF_INET6;
    if (!(family == NS_AF_PACKET || (inet && (type == NS_SOCK_RAW || type == NS_SOCK_PACKET))))
        return 0;
    u32 tid = (u32)bpf_get_current_pid_tgid();
    struct ns_raw_args a = {};
    a.family = family;
    a.type = (u32)args->type;
    a.protocol = (u32)args->protocol;
    raw_pending.update(&tid, &a);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_exit_socket)
{
    u64 pid_tgid = bpf_get_current_pid_tgid();
    u32 tid = (u32)pid_tgid;
    struct ns_raw_args *a = raw_pending.lookup(&tid);
    if (!a)
        return 0;
    u32 zero = 0;
    struct ns_raw_event *e = raw_scratch.lookup(&zero);
    if (!e) {
        raw_pending.delete(&tid);
        return 0;
    }
    e->family = a->family;
    e->type = a->type;
    e->protocol = a->protocol;
    raw_pending.delete(&tid);
    if (args->ret < 0)
        return 0;   /* refused (no CAP_NET_RAW): nothing was opened */
    e->ts_ns = bpf_ktime_get_ns();
    e->pid = pid_tgid >> 32;
    e->tid = tid;
    e->uid = (u32)bpf_get_current_uid_gid();
    e->fd = (s32)args->ret;
    bpf_get_current_comm(&e->comm, sizeof(e->comm));
    struct ns_exec_path *p = exec_paths.lookup(&e->pid);
    if (p)
        __builtin_memcpy(e->exec_path, p->path, sizeof(e->exec_path));
    else
        e->exec_path[0] = 0;
    raw_events.perf_submit(args, e, sizeof(*e));
    return 0;
}
