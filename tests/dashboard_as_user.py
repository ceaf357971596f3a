"""Drive the dashboard (streamlit AppTest) through approve, reject + trust,
whitelist, settings and a ban: run by tests/test_dashboard_commands.py as an
unprivileged user (runuser), with NETSENTINEL_RECORDS/CONFIG and
NETSENTINEL_DASHBOARD_TOKEN in the environment. Prints one JSON object:
per step, the success and error lines the page showed, and whether the
backend/host widgets were locked."""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

from streamlit import config as st_config
from streamlit.testing.v1 import AppTest

SCRIPT = str(Path(__file__).resolve().parent.parent / "dashboard.py")


def texts(at: AppTest, kind: str) -> str:
    return "\n".join(re.sub(r"\\(.)", r"\1", str(e.value)).replace("\u2060", "")
                     for e in getattr(at, kind))


def main() -> int:
    st_config.set_option("server.address", "127.0.0.1")
    at = AppTest.from_file(SCRIPT, default_timeout=90)
    at.query_params["token"] = os.environ["NETSENTINEL_DASHBOARD_TOKEN"]
    at.run()
    out: dict = {"uid": os.geteuid(), "info": texts(at, "info"), "warning": texts(at, "warning")}

    def step(name: str) -> None:
        out[name] = {"success": texts(at, "success"), "error": texts(at, "error"),
                     "exception": [str(e.value) for e in at.exception]}

    at.radio(key="nav").set_value("Review").run()
    at.selectbox(key="review_open").set_value("seedcrit0001").run()
    at.selectbox(key="ttl_seedcrit0001").set_value("1 hour")
    at.button(key="approve_seedcrit0001").click().run()
    step("approve")
    at.selectbox(key="review_open").set_value("seedhigh0002").run()
    at.checkbox(key="trust_seedhigh0002").check()
    at.button(key="reject_seedhigh0002").click().run()
    step("reject")
    at.radio(key="nav").set_value("Whitelist").run()
    at.selectbox(key="wl_kind").set_value("ip")
    at.text_input(key="wl_value").input("198.51.100.77")
    at.button(key="wl_add").click().run()
    step("whitelist")
    at.radio(key="nav").set_value("LLM settings").run()
    out["locked"] = {k: at.selectbox(key=k).disabled if k == "llm_backend" else
                     at.text_input(key=k).disabled for k in ("llm_backend", "llm_host", "llm_model")}
    at.number_input(key="llm_max_calls").set_value(9)
    at.button(key="llm_save").click().run()
    step("settings")
    at.button(key="llm_test").click().run()
    step("probe")
    at.radio(key="nav").set_value("Bans").run()
    at.text_input(key="ban_ip").input("203.0.113.63")
    at.button(key="ban_submit").click().run()
    step("ban")
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
