"""Applying what an unprivileged dashboard asked for (netsentinel/dashcmd.py):
records/dashboard_commands.d/, consumed by the analyzer, which runs as root
and owns pending_threats.json, rule_proposals.json and llm_config.json (and
edits the whitelist file it already watches).

Each file: read (no links, nothing others may write, size-capped), its owner
taken from fstat (the only identity trusted; it must be root or in the
netsentinel group), parsed by jsonsafe, shape-checked, then applied with the
same checks a root dashboard makes (a ban checked against the whitelist and
the protected set, whitelist entries and settings validated). Whatever
happens, one audit entry names the owner uid and the user the command claims
(labelled unverified), and a refusal goes to dashboard_commands.rejected.json
with its reason. Then the file is removed. A crash between applying and
removing applies it again: approving or rejecting twice is refused the
second time (already decided), whitelist edits and settings are idempotent.

Where API keys go, which model runs and which files root reads are root's
choice: a command from a non-root user may not change llm/config's
ROOT_ONLY_SETTINGS (backend, host, model, known_bad_files, hf_*)."""

from __future__ import annotations

import grp
import os
import pwd
import threading
from typing import Any, Callable

from .. import audit, dashcmd, dropdir, fsguard, jsonsafe, proposals, threats
from ..errors import InputError, NetSentinelError
from ..eventstore import open_store, resolve_dsn
from ..llm.config import ROOT_ONLY_SETTINGS, save_llm_config, validate_llm_config
from ..llm.probe import probe_backend
from ..llm.propose import ask_for_rules, summary
from ..llm.redact import redact
from ..netinfo import ProtectedCache
from ..records import DASHBOARD_COMMANDS, DASHBOARD_COMMANDS_REJECTED, LLM_CONFIG
from ..store import CorruptFile, RecordsStore, StoreError
from ..whitelist import WhitelistFile

MAX_PER_POLL = 100  # one poll stays short; the rest waits for the next


class Refused(NetSentinelError):
    pass


class Deferred(Exception):
    """Applied off the writer thread; recorded when it ends."""


PROBE_TIMEOUT_S = 5


def _user(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return "?"


def _in_group(uid: int) -> bool:
    """root, or a member of the netsentinel group (primary or supplementary)."""
    if uid == 0:
        return True
    gid = fsguard.command_gid()
    if gid == 0:
        return False
    try:
        pw = pwd.getpwuid(uid)
        return pw.pw_gid == gid or pw.pw_name in grp.getgrgid(gid).gr_mem
    except KeyError:
        return False


class DashboardCommands:
    def __init__(self, store: RecordsStore, whitelist_file: WhitelistFile | None,
                 warn: Callable[[str], None], in_force: Callable[[], dict]):
        """in_force: the analyzer settings running now (flags + file)."""
        self.store = store
        self.in_force = in_force
        self.whitelist_file = whitelist_file
        self.warn = warn
        self.protected = ProtectedCache()
        self.counts = {"applied": 0, "refused": 0}
        self.ready = False
        self._kept: set[str] = set()  # files kept for a retry, already reported
        self._probe: threading.Thread | None = None

    def _ensure(self) -> bool:
        """Create the directory once (root only: as another user the
        analyzer has no business applying anyone's commands)."""
        if not self.ready and os.geteuid() == 0:
            dropdir.ensure_named(self.store.root, DASHBOARD_COMMANDS)
            self.ready = True
        return self.ready

    def poll(self) -> int:
        """Apply what waits; the number of files handled."""
        if not self._ensure():
            return 0
        try:
            names = dropdir.list_files(self.store.root, DASHBOARD_COMMANDS)[:MAX_PER_POLL]
        except (fsguard.UnsafePath, OSError) as e:
            self.warn(f"{DASHBOARD_COMMANDS}: {e}; dashboard commands wait")
            return 0
        for name in names:
            self._one(name)
        return len(names)

    def _one(self, name: str) -> None:
        try:
            judged = self._judge(name)
            if judged is None:
                return  # taken away meanwhile
            if judged[2] is not None:  # None: recorded when it ends (a probe)
                self._record(*judged, name)
        except StoreError as e:
            # records/ itself failing: keep the file for the next poll (said once).
            if name not in self._kept:
                self._kept.add(name)
                self.warn(f"{DASHBOARD_COMMANDS}/{name}: {e}; kept for the next try")
            return
        self._kept.discard(name)
        dropdir.remove(self.store.root, DASHBOARD_COMMANDS, name)

    def _judge(self, name: str) -> tuple[Any, int | None, str] | None:
        """(command, owner uid, outcome) once applied or refused."""
        cmd: Any = None
        uid = None
        try:
            data, st = dropdir.read(self.store.root, DASHBOARD_COMMANDS, name)
            if data is None:
                return None
            uid = st.st_uid
            if st.st_nlink != 1:  # a hard link to someone else's file is not a command of its owner
                raise Refused(f"has {st.st_nlink} hard links; write a file of your own")
            if not _in_group(uid):
                raise Refused(f"written by uid {uid}, who is neither root nor in the "
                              f"{fsguard.COMMAND_GROUP} group")
            cmd = jsonsafe.loads(data.decode("utf-8", errors="strict"))
            dashcmd.validate(cmd)
            self._apply(cmd, uid)
            return cmd, uid, "ok"
        except Deferred:
            return cmd, uid, None
        except CorruptFile as e:  # the target file is broken (set aside for a person): refused
            return cmd, uid, f"refused: {' '.join(str(e).split())[:300]}"
        except StoreError:
            raise
        except (fsguard.UnsafePath, UnicodeDecodeError, NetSentinelError, ValueError) as e:
            return cmd, uid, f"refused: {' '.join(str(e).split())[:300]}"

    def _who(self, cmd: Any, uid: int | None) -> str:
        claim = cmd.get("by") if isinstance(cmd, dict) and isinstance(cmd.get("by"), str) else "?"
        owner = f"uid {uid} ({_user(uid)})" if uid is not None else "uid unknown"
        return f"{owner} via {DASHBOARD_COMMANDS}; says: {claim[:200]} (unverified)"

    def _record(self, cmd: Any, uid: int | None, outcome: str, name: str,
                extra: dict | None = None) -> None:
        ok = outcome == "ok"
        self.counts["applied" if ok else "refused"] += 1
        kind = cmd.get("kind") if isinstance(cmd, dict) else None
        details = {"command_id": cmd.get("id") if isinstance(cmd, dict) else None, "file": name}
        if isinstance(cmd, dict):
            details.update({k: v for k, v in cmd.items() if k not in dashcmd.COMMON})
        action = kind if kind != "audit" else str(cmd.get("action"))
        details.update(extra or {})
        if kind == "audit" and ok:
            # Reported by the dashboard about what it queued elsewhere (a ban
            # for the loader): the analyzer vouches only for who reported it.
            details = dict(cmd.get("details") or {}, command_id=cmd.get("id"),
                           reported="by the dashboard, not carried out by the analyzer")
            outcome = str(cmd.get("outcome"))
        if not ok:  # kept aside first: the audit entry is the answer the dashboard waits for
            self.store.reject_command(cmd if cmd is not None else {"file": name}, outcome,
                                      source="analyzer", name=DASHBOARD_COMMANDS_REJECTED,
                                      ref=name)
            self.warn(f"{DASHBOARD_COMMANDS}/{name}: {outcome}")
        audit.record(self.store, self._who(cmd, uid), str(action or "dashboard_command"),
                     details, outcome)

    # ------------------------------------------------------------ applying
    def _whitelist(self) -> WhitelistFile:
        if self.whitelist_file is None:
            raise Refused("this analyzer has no whitelist file")
        return self.whitelist_file

    def _apply(self, cmd: dict, uid: int) -> None:
        kind = cmd["kind"]
        by = f"dashboard ({_user(uid)}): {str(cmd.get('by'))[:100]}"
        if kind == "approve":
            wl = self._whitelist().load()  # a broken whitelist refuses the ban (fails closed)
            threats.approve(self.store, cmd["threat"], by=by, note=cmd.get("note"),
                            ttl_seconds=cmd.get("ttl_seconds"), whitelist=wl,
                            protected=self.protected.get(wl.config["protect_ssh_ports"]))
        elif kind == "contain":  # contain_commands.json is the loader's: root queues it
            threats.contain(self.store, cmd["threat"], by=by, note=cmd.get("note"),
                            ttl_seconds=cmd.get("ttl_seconds"), stop=cmd.get("stop"),
                            by_exe=cmd.get("by_exe", True))
        elif kind == "reject":
            threats.reject(self.store, cmd["threat"], by=by, note=cmd.get("note"),
                           whitelist_file=self._whitelist() if cmd.get("trust") else None)
        elif kind in ("whitelist_add", "whitelist_remove"):
            self._whitelist().edit(cmd["entry_kind"], cmd["value"],
                                   remove=kind == "whitelist_remove")
        elif kind == "whitelist_save":
            self._whitelist().save(cmd["config"])
        elif kind == "settings":
            self._settings(cmd["config"], uid)
        elif kind == "probe":
            self._start_probe(cmd, uid)
        elif kind == "propose":
            self._start_propose(cmd, uid)
        elif kind == "proposal":
            proposals.decide(self.store, cmd["proposal"], approve=cmd["approve"], by=by,
                             note=cmd.get("note"))
        # "audit": nothing to apply; _record writes it.

    def _start_probe(self, cmd: dict, uid: int) -> None:
        """Test connection with root's keys, off the writer thread (a probe
        may take its whole timeout); one at a time. Its answer is recorded
        when it ends, under the command's id."""
        if self._probe is not None and self._probe.is_alive():
            raise Refused("a connection test is already running; try again in a few seconds")

        def run() -> None:
            try:
                ok, message = probe_backend(self.in_force(), timeout=PROBE_TIMEOUT_S)
                self._record(cmd, uid, "ok" if ok else f"refused: {message}", "probe",
                             extra={"message": redact(message)})
            except Exception as e:  # noqa: BLE001 (a thread's last word is a line, not a trace)
                self.warn(f"{DASHBOARD_COMMANDS}: connection test failed: {type(e).__name__}: {e}")

        self._probe = threading.Thread(target=run, name="dashboard-probe", daemon=True)
        self._probe.start()
        raise Deferred

    def _start_propose(self, cmd: dict, uid: int) -> None:
        """"Propose rules" with root's settings and keys, off the writer thread
        (the model may take its whole timeout); one model call at a time,
        shared with the connection test. Recorded under the command's id
        when it ends: the proposal's id, or why there is none."""
        if self._probe is not None and self._probe.is_alive():
            raise Refused("the model is already being asked; try again when it has answered")
        wl = self._whitelist().load()
        protected = self.protected.get(wl.config["protect_ssh_ports"])

        def run() -> None:
            try:
                flows = self._recent_floods()
                p = ask_for_rules(self.store, self.in_force(), flows, protected=protected,
                                  ssh_ports=wl.config["protect_ssh_ports"],
                                  trigger={"kind": "dashboard", "src": ", ".join(f["src"] for f in flows)})
                self._record(cmd, uid, "ok", "propose", extra={"message": summary(p), "proposal": p["id"]})
            except InputError as e:
                self._record(cmd, uid, f"refused: {e}", "propose", extra={"message": str(e)})
            except Exception as e:  # noqa: BLE001 (a thread's last word is a line, not a trace)
                self.warn(f"{DASHBOARD_COMMANDS}: rule proposal failed: {type(e).__name__}: {e}")
                self._record(cmd, uid, f"refused: {type(e).__name__}: {e}", "propose")

        self._probe = threading.Thread(target=run, name="dashboard-propose", daemon=True)
        self._probe.start()
        raise Deferred

    def _recent_floods(self) -> list[dict]:
        try:
            db = open_store(resolve_dsn(None, self.store), readonly=True)
        except Exception:  # noqa: BLE001 (no history yet, or unreadable: nothing to propose from)
            return []
        try:
            return proposals.flood_evidence(db) if db.schema_version() else []
        finally:
            db.close()

    def _settings(self, new: dict, uid: int) -> None:
        cfg = validate_llm_config(new)
        if uid != 0:
            extra = [k for k in new if k.startswith("_")]
            if extra:
                raise Refused(f"unknown settings {', '.join(extra)[:100]}")
            current = self.in_force()
            changed = [k for k in ROOT_ONLY_SETTINGS if cfg.get(k) != current.get(k)]
            if changed:
                raise Refused(f"{', '.join(changed)}: only root changes these (which model runs, "
                              f"where the API key goes, which files root reads); edit "
                              f"{self.store.path(LLM_CONFIG)} or use the analyzer's flags")
        cfg["updated_by"] = f"dashboard ({_user(uid)})"
        save_llm_config(self.store, cfg)
