"""A local user at the dashboard, in headless Chromium: tests run this as a
real unprivileged user (`runuser -u USER -- python -m
netsentinel.testing.dashboard_intruder ...`) and check the records files
afterwards. It tries, through the page only, to ban an address, trust
another and point "Test connection" at its own listener; with --token it
first signs in the way a person with the token would (the control case).
Prints one JSON report of what it could see and do.
"""

from __future__ import annotations

import argparse
import json
import re
import sys

from .dashboard_browser import chromium_page, idle

GUESSES = ("admin", "password", "netsentinel", "changeme", "letmein", "123456", "root", "dashboard")
SETTLE_MS = 60_000


def _settle(page) -> str:
    """Wait until the app shows either the sign-in form or a page; which one."""
    page.locator("[data-testid=stSidebar], [data-testid=stForm]").first.wait_for(timeout=SETTLE_MS)
    return "app" if page.locator("[data-testid=stSidebar]").count() else "login"


def _page(page, url: str, slug: str) -> str:
    page.goto(f"{url}/?page={slug}")
    return _settle(page)


def attempt(url: str, token: str | None, ban: str, trust: str, host: str) -> dict:
    report: dict = {"uid_view": [], "done": []}
    with chromium_page() as page:
        if token:
            page.goto(f"{url}/?token={token}&page=bans")
            report["signed_in"] = _settle(page) == "app"
            report["token_left_in_url"] = "token=" in page.url
        for slug in ("bans", "whitelist", "llm"):
            seen = _page(page, url, slug) if not token else "app"
            report["uid_view"].append((slug, seen))
            if seen == "login":
                continue
            if token:
                idle(page)
                page.locator("[data-testid=stSidebar]").get_by_text(
                    {"bans": "Bans", "whitelist": "Whitelist", "llm": "LLM settings"}[slug],
                    exact=True).click()
            {"bans": page.get_by_label("IP or CIDR"), "whitelist": page.get_by_label("Value"),
             "llm": page.get_by_role("textbox", name="Host / base URL")}[slug].wait_for()
            idle(page)
            if slug == "bans":
                page.get_by_label("IP or CIDR").fill(ban)
                page.get_by_role("button", name="Ban", exact=True).click()
                page.get_by_text(f"Ban of {ban} queued").wait_for()
            elif slug == "whitelist":
                page.get_by_label("Value").fill(trust)
                page.get_by_role("button", name="Trust", exact=True).click()
                page.get_by_text(f"Trusted ip {trust}").wait_for()
            else:
                page.get_by_role("textbox", name="Host / base URL").fill(host)  # typed, never saved
                page.get_by_role("button", name="Test connection").click()
                page.get_by_text("Test connection (saved settings)").wait_for()
            report["done"].append(slug)
        if not token:  # the sign-in form is all there is: guess
            report["locked_out"] = False
            for n, guess in enumerate(GUESSES, 1):
                idle(page)
                page.locator("input[type=password]").fill(guess)
                page.get_by_role("button", name="Sign in").click()
                # One answer per guess before the next (a click during a run would be merged).
                page.get_by_text(re.compile(rf"\({n} of \d+ tries|Too many failed logins")).first.wait_for()
                if page.get_by_text("Too many failed logins").count():
                    report["locked_out"] = True
                    break
            report["signed_in"] = page.locator("[data-testid=stSidebar]").count() > 0
    return report


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("url")
    ap.add_argument("--token")
    ap.add_argument("--ban", default="203.0.113.66")
    ap.add_argument("--trust", default="198.51.100.66")
    ap.add_argument("--host", default="http://127.0.0.1:9")
    ns = ap.parse_args(argv)
    print(json.dumps(attempt(ns.url, ns.token, ns.ban, ns.trust, ns.host)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
