"""Who may use the dashboard, without Streamlit: the login token, the
password (or its hash), and the login rate limit.

The dashboard steers a root firewall, and every local user can reach
127.0.0.1:8501, so it asks for a secret on every address:
- a random token, from NETSENTINEL_DASHBOARD_TOKEN when set (make run
  passes it), else records/.dashboard_token (created at first start,
  mode 0600, refused when others could read or replace it);
- or NETSENTINEL_DASHBOARD_PASSWORD: a password, or a hash made by
  `python -m netsentinel.dashboard.access hash` (pbkdf2_sha256$...).

Failed logins are counted in this process (module state, so a page reload
or a new browser session starts no fresh budget): per client address and
over all clients, each with a lockout.

    python -m netsentinel.dashboard.access token [--records DIR]   # print (create) the token
    python -m netsentinel.dashboard.access hash                    # hash a password from stdin
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import secrets
import stat
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..records import DASHBOARD_TOKEN as TOKEN_FILE
from ..store import RecordsStore, StoreError

TOKEN_ENV = "NETSENTINEL_DASHBOARD_TOKEN"
TOKEN_FILE_ENV = "NETSENTINEL_DASHBOARD_TOKEN_FILE"  # a private copy (the systemd unit)
PASSWORD_ENV = "NETSENTINEL_DASHBOARD_PASSWORD"
IDLE_ENV = "NETSENTINEL_DASHBOARD_IDLE_MINUTES"
# Shorter tokens are refused: a guessable one defeats the rate limit's purpose.
MIN_TOKEN_CHARS = 16
DEFAULT_IDLE_MINUTES = 30.0
MAX_SESSION_SECONDS = 12 * 3600
HASH_PREFIX = "pbkdf2_sha256$"
HASH_ITERATIONS = 200_000


class AccessError(Exception):
    """The dashboard cannot check anyone (no usable secret): one line, with the fix."""


# ------------------------------------------------------------------ the token
def _check_token(token: str, where: str) -> str:
    token = token.strip()
    if len(token) < MIN_TOKEN_CHARS:
        raise AccessError(f"{where}: the token is shorter than {MIN_TOKEN_CHARS} characters; "
                          f"use a random one (python -c 'import secrets; print(secrets.token_urlsafe(32))')")
    return token


def token_file(records: Path) -> Path:
    return Path(records) / TOKEN_FILE


def load_or_create_token(records: Path) -> str:
    """The token in records/.dashboard_token, created (0600, this user) when
    missing. A file owned by someone else or open to group/others is refused:
    whoever could read or replace it could log in."""
    path = token_file(records)
    try:
        return read_private_token(path)
    except FileNotFoundError:
        return _create_token(path)


def read_private_token(path: Path) -> str:
    """A token file that only this user may read (FileNotFoundError if none)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        raise
    except OSError as e:
        raise AccessError(f"cannot read {path}: {e.strerror}; remove it, or set {TOKEN_ENV}") from None
    with os.fdopen(fd, "r", encoding="utf-8", errors="replace") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o077:
            raise AccessError(f"{path} is not a private file of uid {os.geteuid()} (mode "
                              f"{stat.S_IMODE(st.st_mode):04o}, owner {st.st_uid}); remove it so a new "
                              "token is made, or set " + TOKEN_ENV)
        return _check_token(f.read(4096), str(path))


def _create_token(path: Path) -> str:
    token = secrets.token_urlsafe(32)
    try:
        RecordsStore(path.parent)  # creates records/ the way every tool does
    except StoreError as e:
        raise AccessError(f"{e}; set {TOKEN_ENV}") from None
    try:
        # O_EXCL: two starting dashboards never overwrite each other's token;
        # the mode is set explicitly, whatever the umask.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        return load_or_create_token(path.parent)
    except OSError as e:
        raise AccessError(f"cannot create {path}: {e.strerror}; start the dashboard with "
                          f"`sudo make run`, or set {TOKEN_ENV}") from None
    with os.fdopen(fd, "w") as f:
        os.fchmod(f.fileno(), 0o600)
        f.write(token + "\n")
    return token


def configured_token(records: Path) -> str:
    env = os.environ.get(TOKEN_ENV)
    if env:
        return _check_token(env, TOKEN_ENV)
    copy = os.environ.get(TOKEN_FILE_ENV)
    if copy:  # the systemd unit's hand-over (see copy_token)
        try:
            return read_private_token(Path(copy))
        except FileNotFoundError:
            raise AccessError(f"{TOKEN_FILE_ENV}={copy} does not exist") from None
    return load_or_create_token(records)


def copy_token(records: Path, dest: Path, user: str) -> None:
    """Root hands the token to the unprivileged dashboard: a copy only `user`
    may read (netsentinel-dashboard.service's ExecStartPre, into its runtime
    directory), so the root-only original stays root's."""
    import pwd

    env = os.environ.get(TOKEN_ENV)
    token = _check_token(env, TOKEN_ENV) if env else load_or_create_token(records)
    pw = pwd.getpwnam(user)
    tmp = dest.with_name(f".{dest.name}.tmp")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "w") as f:
        os.fchown(f.fileno(), pw.pw_uid, pw.pw_gid)
        os.fchmod(f.fileno(), 0o600)
        f.write(token + "\n")
    os.replace(tmp, dest)


def login_url(token: str, host: str = "127.0.0.1", port: int = 8501) -> str:
    return f"http://{host}:{port}/?token={token}"


# --------------------------------------------------------------- the password
def hash_password(password: str, salt: bytes | None = None, iterations: int = HASH_ITERATIONS) -> str:
    salt = salt or secrets.token_bytes(16)
    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    return f"{HASH_PREFIX}{iterations}${salt.hex()}${digest.hex()}"


def password_matches(typed: str, configured: str) -> bool:
    """Constant-time comparison with a password or a pbkdf2_sha256 hash."""
    if configured.startswith(HASH_PREFIX):
        try:
            iterations, salt, digest = configured[len(HASH_PREFIX):].split("$")
            want = bytes.fromhex(digest)
            got = hashlib.pbkdf2_hmac("sha256", typed.encode(), bytes.fromhex(salt), int(iterations))
        except ValueError:
            return False
        return hmac.compare_digest(got, want)
    return hmac.compare_digest(typed.encode(), configured.encode())


def token_matches(typed: str, token: str) -> bool:
    return hmac.compare_digest(typed.strip().encode(), token.encode())


# ------------------------------------------------------------ the rate limit
@dataclass
class _Count:
    failures: list[float] = field(default_factory=list)
    locked_until: float = 0.0
    lockouts: int = 0


class LoginLimiter:
    """Failed logins per client and over all clients. More than `per_client`
    failures within `window` seconds locks that client out, more than
    `overall` locks everyone out (a distributed guesser); each lockout of the
    same client doubles, up to `max_lock`. A success clears the client."""

    def __init__(self, per_client: int = 5, overall: int = 20, window: float = 300.0,
                 lock: float = 60.0, max_lock: float = 3600.0) -> None:
        self.per_client, self.overall, self.window = per_client, overall, window
        self.lock, self.max_lock = lock, max_lock
        self._guard = threading.Lock()
        self._clients: dict[str, _Count] = {}
        self._all = _Count()

    def reset(self) -> None:
        with self._guard:
            self._clients.clear()
            self._all = _Count()

    def locked_for(self, client: str, now: float | None = None) -> float:
        """Seconds this client must still wait (0: it may try)."""
        now = time.monotonic() if now is None else now
        with self._guard:
            c = self._clients.get(client)
            return max(0.0, (c.locked_until if c else 0.0) - now, self._all.locked_until - now)

    def failed(self, client: str, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        with self._guard:
            if len(self._clients) > 10_000:  # bounded: forget the oldest clients
                for k in list(self._clients)[:5_000]:
                    del self._clients[k]
            for count, limit in ((self._clients.setdefault(client, _Count()), self.per_client),
                                 (self._all, self.overall)):
                count.failures = [t for t in count.failures if now - t < self.window] + [now]
                if len(count.failures) >= limit:
                    count.lockouts += 1
                    count.locked_until = now + min(self.max_lock, self.lock * 2 ** (count.lockouts - 1))
                    count.failures.clear()

    def failures(self, client: str, now: float | None = None) -> int:
        """This client's failures in the window (since its last lockout)."""
        now = time.monotonic() if now is None else now
        with self._guard:
            c = self._clients.get(client)
            return sum(1 for t in c.failures if now - t < self.window) if c else 0

    def succeeded(self, client: str) -> None:
        with self._guard:
            self._clients.pop(client, None)


LIMITER = LoginLimiter()


def idle_seconds() -> float:
    try:
        minutes = float(os.environ.get(IDLE_ENV) or DEFAULT_IDLE_MINUTES)
    except ValueError:
        minutes = DEFAULT_IDLE_MINUTES
    return max(60.0, minutes * 60)


def main(argv: list[str]) -> int:
    import argparse
    import getpass

    from ..paths import records_dir

    ap = argparse.ArgumentParser(prog="python -m netsentinel.dashboard.access",
                                 description="Print the dashboard's login token, or hash a password.")
    sub = ap.add_subparsers(dest="what", required=True)
    t = sub.add_parser("token", help="print the token (created in records/ when missing)")
    t.add_argument("--records", metavar="DIR", help="records directory (default: the checkout's)")
    t.add_argument("--url", metavar="HOST:PORT", help="print the login URL for this address instead")
    t.add_argument("--copy-to", metavar="FILE", help="print nothing; write a copy only --owner can "
                   "read (root, for the unprivileged dashboard's service)")
    t.add_argument("--owner", metavar="USER", default="netsentinel", help="owner of the --copy-to file")
    sub.add_parser("hash", help="read a password (stdin or prompt), print its hash for "
                                f"{PASSWORD_ENV}")
    ns = ap.parse_args(argv)
    try:
        if ns.what == "token" and ns.copy_to:
            copy_token(records_dir(ns.records), Path(ns.copy_to), ns.owner)
        elif ns.what == "token":
            token = configured_token(records_dir(ns.records))
            if ns.url:
                host, _, port = ns.url.rpartition(":")
                print(login_url(token, host or "127.0.0.1", int(port)))
            else:
                print(token)
        else:
            pw = sys.stdin.readline().rstrip("\n") if not sys.stdin.isatty() else getpass.getpass()
            if not pw:
                raise AccessError("empty password")
            print(hash_password(pw))
    except (AccessError, ValueError, KeyError, OSError) as e:
        print(f"access: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
