"""A throwaway PostgreSQL server for the event store's tests and bench:
initdb in a temporary directory as an unprivileged system user (initdb
refuses root), listening on a free loopback port and a socket in that
directory, stopped and deleted by close(). Independent of any Debian
cluster on this machine (its service is never touched)."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

PG_USER = "netsentinel-pgtest"  # a --system user, made on first use


def pg_bindir() -> Path | None:
    """The newest /usr/lib/postgresql/*/bin with initdb (Debian's layout), or None."""
    dirs = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                  key=lambda p: int(Path(p).parent.parent.name) if Path(p).parent.parent.name.isdigit() else 0)
    return Path(dirs[-1]).parent if dirs else None


def unavailable() -> str | None:
    """Why a throwaway server cannot be started here, or None."""
    if pg_bindir() is None:
        return "PostgreSQL is not installed (Debian's postgresql package, scripts/debian-packages.txt)"
    if os.geteuid() != 0 or shutil.which("runuser") is None:
        return "starting PostgreSQL as an unprivileged user needs root and runuser"
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "psycopg is not installed (requirements.txt)"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ensure_user() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(PG_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--user-group", "--no-create-home",
                        "--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin", PG_USER],
                       check=True, capture_output=True)
        return pwd.getpwnam(PG_USER)


class PgServer:
    def __init__(self) -> None:
        why = unavailable()
        if why:
            raise RuntimeError(why)
        self.bindir = pg_bindir()
        user = _ensure_user()
        self.dir = Path(tempfile.mkdtemp(prefix="ns-pg-"))
        os.chown(self.dir, user.pw_uid, user.pw_gid)
        self.data = self.dir / "data"
        self.port = _free_port()
        self._started = False
        try:
            self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "-E", "UTF8",
                      "--no-sync", "--no-instructions")
            self.start()
        except Exception:
            self.close()
            raise

    def start(self) -> None:
        """Start (again, after stop()) on the same port; returns once it accepts connections."""
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.dir / "server.log"), "-w",
                  "-t", "60", "-o", f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 "
                  "-c fsync=off -c full_page_writes=off", "start")
        self._started = True

    def stop(self) -> None:
        if self._started:
            self._started = False
            self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    def _run(self, tool: str, *args: str) -> None:
        r = subprocess.run(["runuser", "-u", PG_USER, "--", str(self.bindir / tool), *args],
                           capture_output=True, text=True, timeout=120, cwd=self.dir)
        if r.returncode != 0:
            log = self.dir / "server.log"
            tail = log.read_text()[-500:] if log.exists() else ""
            raise RuntimeError(f"{tool} failed ({r.returncode}): {r.stderr.strip()} {tail}".strip())

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def create_db(self, name: str) -> str:
        """A fresh database on this server; its DSN."""
        import psycopg
        with psycopg.connect(self.dsn, autocommit=True) as c:
            c.execute(f'CREATE DATABASE "{name}"')
        return f"postgresql://postgres@127.0.0.1:{self.port}/{name}"

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> "PgServer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
