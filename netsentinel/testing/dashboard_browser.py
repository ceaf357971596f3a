"""Helpers for the real-browser dashboard test: `streamlit run dashboard.py`
as a subprocess on a free loopback port, and Debian's headless Chromium
driven by playwright (never a downloaded browser)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator

ROOT = Path(__file__).resolve().parent.parent.parent
CHROMIUM = "/usr/bin/chromium"
# The machine's network refuses everything but loopback: keep Chromium from trying.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-default-apps",
                 "--disable-extensions", "--metrics-recording-only", "--no-default-browser-check"]


def missing() -> str | None:
    """Why the browser test cannot run here, or None."""
    if not Path(CHROMIUM).exists():
        return f"{CHROMIUM} not installed (apt-get install chromium; see scripts/debian-packages.txt)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "python package playwright not installed (pip install -r requirements.txt)"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# A 1x1 transparent PNG: what a tracking pixel answers.
PIXEL = bytes.fromhex("89504e470d0a1a0a0000000d4948445200000001000000010806000000"
                      "1f15c4890000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082")


class _Recorder(BaseHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        srv = self.server.listener
        with srv.lock:
            srv.requests.append({"method": "GET", "path": self.path, "headers": dict(self.headers.items())})
        if self.path.rstrip("/").endswith(("/api/tags", "/models")):
            body, kind = json.dumps({"models": [{"name": m} for m in srv.models],
                                     "data": [{"id": m} for m in srv.models]}).encode(), "application/json"
        else:
            body, kind = PIXEL, "image/png"
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class Listener:
    """A loopback HTTP server that records every request it gets (path,
    headers): an attacker's tracking-pixel host or key catcher, or a
    configured LLM endpoint answering /models and /api/tags."""

    def __init__(self, models: tuple = ("qwen3:8b",)) -> None:
        self.models = list(models)
        self.requests: list[dict] = []
        self.lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
        self._httpd.daemon_threads = True
        self._httpd.listener = self
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,), daemon=True)

    def seen(self) -> list[dict]:
        with self.lock:
            return list(self.requests)

    def __enter__(self) -> "Listener":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


@contextlib.contextmanager
def dashboard_server(records: Path, config: Path, log: Path, refresh: float = 2.0,
                     timeout: float = 60.0, token: str | None = None,
                     user: str | None = None, extra_env: dict | None = None) -> Iterator[str]:
    """Run the dashboard on 127.0.0.1:<free port>; yields its URL. Records and
    config are passed after `--`, as a person would. token: its
    NETSENTINEL_DASHBOARD_TOKEN (None: it makes records/.dashboard_token).
    user: run it as this user (runuser), as scripts/run.sh does."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("NETSENTINEL_")}
    if token is not None:
        env["NETSENTINEL_DASHBOARD_TOKEN"] = token
    env.update(extra_env or {})
    cmd = [sys.executable, "-m", "streamlit", "run", "dashboard.py", "--server.port", str(port),
           "--server.address", "127.0.0.1", "--server.headless", "true",
           "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none",
           "--", "--records", str(records), "--config", str(config), "--refresh", str(refresh)]
    if user is not None:  # as scripts/run.sh does with DASHBOARD_USER
        cmd = ["runuser", "-u", user, "--", "env", "-i", "HOME=/nonexistent",
               *(f"{k}={v}" for k, v in env.items()
                 if k in ("PATH", "PYTHONPATH", "LANG") or k.startswith("NETSENTINEL_")), *cmd]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"streamlit exited with {proc.returncode}: {log.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                    if r.read().strip() == b"ok":
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"dashboard not healthy after {timeout:.0f}s: {log.read_text()[-2000:]}")
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def chromium_page(width: int = 1440, height: int = 900, requests: list | None = None):
    """A page in headless Chromium; every URL it requests is appended to
    `requests` when given (to prove what the browser did NOT fetch)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            page.set_default_timeout(60_000)  # a deadline under load (2 cores shared), not a speed check
            if requests is not None:
                page.on("request", lambda r: requests.append(r.url))
            yield page
        finally:
            browser.close()


def idle(page) -> None:
    """Wait until the app's script run is over: a click while it still runs
    may be merged into that run and lost. Wait for the element you will
    click first (it exists once the run that draws it has started)."""
    page.locator("[data-testid=stApp][data-test-script-state=notRunning]").wait_for()


def enter_text(page, label: str, text: str, expect: str, tries: int = 3) -> None:
    """Type `text` into the text input `label`, press Enter and wait for
    `expect` on the page. A value typed while a script run is starting can
    be replaced by that run's redraw of the widget (Streamlit), which on a
    loaded machine happens now and then; the typing is then repeated, at
    most `tries` times, and the last wait's timeout is the failure."""
    for attempt in range(tries):
        idle(page)
        box = page.get_by_label(label, exact=True)
        box.fill(text)
        box.press("Enter")
        try:
            page.get_by_text(expect).wait_for(timeout=20_000 if attempt < tries - 1 else None)
            return
        except Exception:  # playwright's TimeoutError: type again unless this was the last try
            if attempt == tries - 1:
                raise


def wait_until(fn, timeout: float = 20.0, every: float = 0.1):
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(every)


def publish_screenshot(src: Path, dest: Path) -> bool:
    """Copy to docs/img only when asked (NETSENTINEL_UPDATE_SCREENSHOT=1), so
    an ordinary test run leaves the checkout unchanged."""
    if os.environ.get("NETSENTINEL_UPDATE_SCREENSHOT") != "1":
        return False
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dest)
    return True
