"""The loader's containment table (issue 12): contain_commands.json (and
contain_commands.d/) → the pinned contain maps → contained.json.

Consumed through cmdqueue.CommandQueue like ban commands: removed from the
queue only after they were applied or refused; a refusal goes to
contain_commands.rejected.json, stderr and a contain_rejected event.

Records, keyed like the commands' ids (containcmd.py):
- "pid:N": a process. Its descendants found in /proc are contained with it;
  later children are added in the kernel at fork. It ends when its TTL
  does, when released, or when the process exits (the kernel drops the
  entry at exit; the loader sees the process gone, or its pid reused).
- "exe:/path": an executable by (dev, inode): every process running that
  file, now or later, loader or no loader, until its TTL or a release.
contained.json is written only here and restored at start; a pinned entry
it lacks goes, unless the file was missing or broken (then it stays:
containment fails closed).
"""

from __future__ import annotations

import os
import signal
import time
from typing import Any, Callable

from .. import dropdir
from ..containcmd import ContainCommand, ContainRefused, exe_id, parse_command, pid_id
from ..kernel import KernelError
from ..kernel.contain import exe_identity
from ..records import CONTAIN_COMMANDS, CONTAIN_COMMANDS_REJECTED, CONTAINED
from ..store import RecordsStore
from ..timefmt import expiry_of, utc_now_iso
from .cmdqueue import CommandQueue
from .containpolicy import descendants, exe_tag, protected_pids, running, shared_exe, socket_cookies
from .procinfo import read_process, read_start
from .refusals import Refusals

SIGNALS = {"TERM": signal.SIGTERM, "KILL": signal.SIGKILL}


def _origin(rec: dict) -> int:
    return exe_tag(rec["dev"], rec["ino"]) if rec["kind"] == "exe" else rec["pid"]


class ContainTable:
    def __init__(self, store: RecordsStore, enforcer, emit: Callable[..., Any],
                 warn: Callable[[str], None], clock: Callable[[], float] = time.time):
        self.store, self.enforcer, self.emit, self.warn, self.clock = store, enforcer, emit, warn, clock
        self.records: dict[str, dict] = {}
        self._refuse = Refusals(store, CONTAIN_COMMANDS_REJECTED, "contain_rejected",
                                "contain command", warn, emit)
        self.queue = CommandQueue(store, CONTAIN_COMMANDS, self._handle, self._refuse, self._save)
        self._refuse.ref = lambda: self.queue.current_ref
        dropdir.ensure(store.root, CONTAIN_COMMANDS)

    # ------------------------------------------------------------ kernel entries
    def _enforce(self, rid: str, rec: dict) -> None:
        exp = expiry_of(rec)
        if rec["kind"] == "exe":
            self.enforcer.contain_exe(rec["dev"], rec["ino"], exp, origin=_origin(rec))
        else:
            self.enforcer.contain_pid(rec["pid"], exp)

    def _lift(self, rec: dict) -> None:
        """Its entry, and the entries of the children forked under it and of its sockets."""
        if rec["kind"] == "exe":
            self.enforcer.release_exe(rec["dev"], rec["ino"])
        for cookie, c in self.enforcer.contained_socks().items():
            if c.origin == _origin(rec):
                self.enforcer.release_sock(cookie)
        for tgid, c in self.enforcer.contained_pids().items():
            if c.origin == _origin(rec) or (rec["kind"] == "pid" and tgid == rec["pid"]):
                self.enforcer.release_pid(tgid)

    @staticmethod
    def _alive(rec: dict) -> bool:
        """An executable stays; a process while its pid has the same start time."""
        if rec["kind"] == "exe":
            return True
        began = read_start(rec["pid"]) if isinstance(rec["pid"], int) else None
        return began is not None and began == rec.get("start_time")

    def _event(self, rid: str, rec: dict, result: str, **extra) -> None:
        self.emit("contain", id=rid, result=result, pid=rec.get("pid"), exe=rec.get("exe"),
                  reason=rec.get("reason"), source=rec.get("source"),
                  expires_at=rec.get("expires_at"), **extra)

    # ------------------------------------------------------------ restore
    def restore(self) -> int:
        saved = self.store.read(CONTAINED, default=None)   # a broken file is set aside
        self.records = {}   # restore() may be run again after a records/ error (_until_done)
        file_ok = isinstance(saved, dict)
        now = self.clock()
        for rid, rec in (saved if file_ok else {}).items():
            if not isinstance(rec, dict) or rec.get("kind") not in ("pid", "exe"):
                self.warn(f"{CONTAINED}: {rid[:80]!r} is not a containment record; dropped")
                continue
            exp = expiry_of(rec)
            try:
                if (exp is not None and exp <= now) or not self._alive(rec):
                    self._lift(rec)
                    self._event(rid, rec, "expired" if exp is not None and exp <= now else "exited")
                    continue
                self._enforce(rid, rec)
            except (KeyError, TypeError, KernelError) as e:
                self.warn(f"{CONTAINED}: cannot restore {rid[:80]!r}: {e}")
                continue
            self.records[rid] = rec
            self._event(rid, rec, "restored")
        # Still-queued commands go in before strays go, so an entry applied
        # just before a crash (not yet in the file) is never lifted and re-added.
        self.queue.process()
        if file_ok:
            self._drop_unrecorded()
        elif self.enforcer.contained_pids() or self.enforcer.contained_exes():
            self.warn(f"kept the pinned containment entries: {CONTAINED} is missing or unreadable")
        self._save()
        return len(self.records)

    def _drop_unrecorded(self) -> None:
        pids = {r["pid"] for r in self.records.values() if r["kind"] == "pid"}
        exes = {(r["dev"], r["ino"]) for r in self.records.values() if r["kind"] == "exe"}
        origins = {_origin(r) for r in self.records.values()}
        for tgid, c in self.enforcer.contained_pids().items():
            if c.origin not in origins and tgid not in pids:
                self.enforcer.release_pid(tgid)
                self.warn(f"released pid {tgid} from the pinned contain map: not in {CONTAINED}")
        for cookie, c in self.enforcer.contained_socks().items():
            if c.origin not in origins:
                self.enforcer.release_sock(cookie)
        for key in self.enforcer.contained_exes():
            if key not in exes:
                self.enforcer.release_exe(*key)
                self.warn(f"released executable {key} from the pinned contain map: not in {CONTAINED}")

    # ------------------------------------------------------------ commands
    def process_commands(self) -> int:
        return self.queue.process()

    def _handle(self, raw: Any) -> None:
        try:
            cmd = parse_command(raw)
            if cmd.action == "release":
                self._release(cmd)
            else:
                self._contain(cmd, raw)
        except (ContainRefused, KernelError) as e:
            self._refuse(raw, str(e))

    def _process_record(self, cmd: ContainCommand) -> dict:
        pid = cmd.pid
        if pid in protected_pids():
            raise ContainRefused(f"pid {pid} is init, this loader or one of its parents")
        info = read_process(pid)
        began = read_start(pid)
        if info["exe"] is None or began is None:
            raise ContainRefused(f"pid {pid}: {info['proc_error'] or 'no such process'}")
        exe = info["exe"].removesuffix(" (deleted)")
        if cmd.exe and exe != cmd.exe:
            raise ContainRefused(f"pid {pid} now runs {exe}, not {cmd.exe}: the process ended and "
                                 "its pid was reused; nothing contained")
        if os.path.basename(exe) == "sshd":
            raise ContainRefused(f"pid {pid} is the SSH server: containing it would contain every new "
                                 "session; contain the session's shell instead")
        dev, ino = exe_identity(f"/proc/{pid}/exe")
        return {"kind": "pid", "pid": pid, "start_time": began, "exe": exe, "dev": dev, "ino": ino,
                "cmdline": info["cmdline"]}

    def _contain(self, cmd: ContainCommand, raw: dict) -> None:
        now = self.clock()
        expires = utc_now_iso(now + cmd.ttl_seconds) if cmd.ttl_seconds else None
        common = {"reason": cmd.reason, "source": cmd.source, "expires_at": expires,
                  **({"threat_id": raw["threat_id"]} if "threat_id" in raw else {})}
        made: list[tuple[str, dict]] = []
        note = None
        if cmd.pid:
            proc = self._process_record(cmd)
            made.append((pid_id(cmd.pid), {**proc, **common}))
            if cmd.by_exe and shared_exe(proc["exe"]):
                note = f"{proc['exe']} is shared by every user: contained pid {cmd.pid} only, not its executable"
            elif cmd.by_exe:
                made.append((exe_id(proc["exe"]), {"kind": "exe", "exe": proc["exe"], "dev": proc["dev"],
                                                   "ino": proc["ino"], "origin_pid": cmd.pid, **common}))
        else:
            if shared_exe(cmd.exe):
                raise ContainRefused(f"{cmd.exe} is shared by every user (a shell, interpreter or "
                                     "system service): contain its processes by pid")
            try:
                dev, ino = exe_identity(cmd.exe)
            except OSError as e:
                raise ContainRefused(f"{cmd.exe}: {e.strerror}") from None
            if (dev, ino) == exe_identity("/proc/self/exe"):
                raise ContainRefused(f"{cmd.exe} runs this loader")
            made.append((exe_id(cmd.exe), {"kind": "exe", "exe": cmd.exe, "dev": dev, "ino": ino,
                                           **common}))
        for rid, rec in made:   # the kernel first; a record only for what is enforced
            old = self.records.get(rid, {})
            rec["contained_at"] = old.get("contained_at") or utc_now_iso(now)
            rec["blocked"], rec["last_blocked_at"] = old.get("blocked", 0), old.get("last_blocked_at")
            self._enforce(rid, rec)
            if rec["kind"] == "pid":
                kids = [c for c in descendants(rec["pid"]) if read_start(c) is not None]
                for c in kids:
                    self.enforcer.contain_pid(c, expiry_of(rec), origin=rec["pid"])
                rec["children"] = len(kids)
                procs = [rec["pid"], *kids]
            else:
                procs = running(rec["dev"], rec["ino"])
            # Sockets they already hold: their packets are dropped from now on.
            cookies = [c for p in procs for c in socket_cookies(p)]
            for c in cookies:
                self.enforcer.contain_sock(c, expiry_of(rec), _origin(rec))
            rec["sockets_cut"] = len(cookies)
            self.records[rid] = rec
            self._event(rid, rec, "updated" if old else "applied", **({"note": note} if note else {}))
        if cmd.signal:
            self._stop(cmd.pid, cmd.signal, made[0][0])

    def _stop(self, pid: int, sig: str, rid: str) -> None:
        try:
            os.kill(pid, SIGNALS[sig])
            result = "sent"
        except ProcessLookupError:
            result = "already gone"
        self.records[rid]["signal"] = f"{sig} {result}"
        self.warn(f"contained pid {pid}; SIG{sig} {result}")

    def _release(self, cmd: ContainCommand, result: str = "released") -> None:
        ids = cmd.ids() if cmd.id else [rid for rid, r in self.records.items()
                                       if (cmd.pid and r.get("pid") == cmd.pid and r["kind"] == "pid")
                                       or (cmd.exe and r["kind"] == "exe" and r["exe"] == cmd.exe)]
        if not ids or not any(rid in self.records for rid in ids):
            self.emit("contain", id=(ids or [cmd.id or pid_id(cmd.pid or 0)])[0], result="not_found",
                      pid=cmd.pid, exe=cmd.exe, reason=cmd.reason, source=cmd.source, expires_at=None)
            return
        for rid in ids:
            rec = self.records.pop(rid, None)
            if rec is not None:
                self._lift(rec)
                self._event(rid, rec, result)

    # ------------------------------------------------------------ upkeep
    def _end(self, due: list[tuple[str, str]]) -> int:
        for rid, result in due:
            rec = self.records.pop(rid)
            self._lift(rec)
            self._event(rid, rec, result)
        if due:
            self._save()
        return len(due)

    def expire(self) -> int:
        """Release what ran out (every loop turn: no /proc reads)."""
        now = self.clock()
        return self._end([(rid, "expired") for rid, r in self.records.items()
                          if (e := expiry_of(r)) is not None and e <= now])

    def sync(self) -> None:
        """Every status cycle: end the records of processes that exited (the
        kernel dropped their entries; their pid may be reused), then copy
        refusals and children from the kernel into contained.json. A count
        never goes down: children that exited take theirs with them."""
        self._end([(rid, "exited") for rid, r in self.records.items() if not self._alive(r)])
        pids, exes = self.enforcer.contained_pids(), self.enforcer.contained_exes()
        socks = self.enforcer.contained_socks()
        changed = False
        for rec in self.records.values():
            own = [exes[k]] if rec["kind"] == "exe" and (k := (rec["dev"], rec["ino"])) in exes \
                else [pids[rec["pid"]]] if rec["kind"] == "pid" and rec["pid"] in pids else []
            kids = [c for t, c in pids.items() if c.origin == _origin(rec) and c.inherited]
            hits = own + kids + [c for c in socks.values() if c.origin == _origin(rec)]
            if len(kids) > rec.get("children", 0):
                rec["children"] = len(kids)
                changed = True
            blocked = sum(c.blocked for c in hits)
            if blocked > rec.get("blocked", 0):
                last = max((c.last_blocked_at or 0 for c in hits), default=0)
                rec["blocked"], rec["last_blocked_at"] = blocked, utc_now_iso(last) if last else None
                changed = True
        if changed:
            self._save()

    def blocked_total(self) -> int:
        return sum(r.get("blocked", 0) for r in self.records.values())

    def _save(self) -> None:
        self.store.write(CONTAINED, self.records)
