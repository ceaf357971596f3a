"""Full receive queues per socket (issue 17, docs/STACK.md "Full receive
queues"): the kernel counts, per socket, the packets it had no room for
(kfree_skb's rx_sk with a full-queue reason, bpf/stack_drops.bpf.c) with the
socket's memory at the last drop and its owner's uid and inode; each
interval this drains them, finds the owning process by the inode (the
socket link in /proc/PID/fd, as `ss -p` does) and keeps a bounded per-socket
total for records/stack.json.
"""

from __future__ import annotations

import os
import time
from typing import Callable

from .procinfo import read_comm

MAX_SOCKETS = 100      # sockets remembered for stack.json (the most drops first)
RETRY_S = 10.0         # an owner not found is looked for again after this long
OWNERS_CACHED = 4096


def socket_owners(inodes: set[int], proc: str = "/proc") -> dict[int, int]:
    """{inode: pid} for the sockets among `inodes` that a process holds open
    (the first process found: a forked child shares its parent's socket)."""
    want = {f"socket:[{i}]": i for i in inodes}
    found: dict[int, int] = {}
    try:
        pids = sorted(int(p) for p in os.listdir(proc) if p.isdigit())
    except OSError:
        return found
    for pid in pids:
        fd_dir = f"{proc}/{pid}/fd"
        try:
            fds = os.listdir(fd_dir)
        except OSError:
            continue   # gone, or a kernel thread
        for fd in fds:
            try:
                link = os.readlink(f"{fd_dir}/{fd}")
            except OSError:
                continue
            ino = want.get(link)
            if ino is not None and ino not in found:
                found[ino] = pid
        if len(found) == len(want):
            break
    return found


class FullQueues:
    def __init__(self, read: Callable[[], list[dict]], proc_info: Callable[[int], dict],
                 owners: Callable[[set[int]], dict[int, int]] = socket_owners,
                 clock: Callable[[], float] = time.monotonic):
        self.read, self.proc_info, self.owners, self.clock = read, proc_info, owners, clock
        self._owner: dict[int, tuple[int | None, float]] = {}   # inode -> (pid or None, when looked)
        self.sockets: dict[tuple, dict] = {}
        self.totals = {"full_queue_drops": 0}

    def _pids(self, inodes: set[int]) -> dict[int, int | None]:
        now = self.clock()
        ask = {i for i in inodes if i not in self._owner
               or (self._owner[i][0] is None and now - self._owner[i][1] >= RETRY_S)}
        if ask:   # one /proc walk for all the new sockets of this interval
            found = self.owners(ask)
            for i in ask:
                self._owner[i] = (found.get(i), now)
            while len(self._owner) > OWNERS_CACHED:
                self._owner.pop(next(iter(self._owner)))
        return {i: self._owner[i][0] for i in inodes}

    def sample(self, now_iso: str) -> list[dict]:
        """This interval's sockets (for the `drops` event), most drops first."""
        rows = self.read()
        if not rows:
            return []
        pids = self._pids({r["inode"] for r in rows if r["inode"]})
        out: dict[tuple, dict] = {}
        for r in rows:
            pid = pids.get(r["inode"]) if r["inode"] else None
            key = (r["netns"], r["proto"], r["local"], r["port"], r["inode"])
            row = out.get(key)
            if row is None:
                info = self.proc_info(pid) if pid else {}
                row = out[key] = {
                    "family": r["family"], "proto": r["proto"], "local": r["local"], "port": r["port"],
                    "netns": r["netns"], "inode": r["inode"], "uid": r["uid"], "pid": pid,
                    "comm": read_comm(pid) if pid else None, "exe": info.get("exe"), "drops": 0}
            row["drops"] += r["drops"]
            row.update({k: r[k] for k in ("reason", "rmem_alloc", "rcvbuf", "truesize")},
                       last_src=r["src"], last_sport=r["sport"])
        rows = sorted(out.values(), key=lambda x: -x["drops"])
        self._remember(rows, now_iso)
        return rows

    def _remember(self, rows: list[dict], now_iso: str) -> None:
        for r in rows:
            key = (r["netns"], r["proto"], r["local"], r["port"], r["inode"])
            old = self.sockets.pop(key, None)
            self.sockets[key] = {**r, "drops": r["drops"] + (old["drops"] if old else 0), "last_seen": now_iso}
            self.totals["full_queue_drops"] += r["drops"]
        if len(self.sockets) > 2 * MAX_SOCKETS:   # the biggest stay; the rest are noise
            keep = sorted(self.sockets.items(), key=lambda kv: -kv[1]["drops"])[:MAX_SOCKETS]
            self.sockets = dict(keep)

    def snapshot(self) -> list[dict]:
        return sorted(self.sockets.values(), key=lambda r: -r["drops"])[:MAX_SOCKETS]
