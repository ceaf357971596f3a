#!/usr/bin/env python3
"""bench/llm_eval_report.py - the tables of docs/llm_eval.md from a run of
bench/llm_eval.py: its JSON line (a finished run), or the --rows-jsonl file
it appends to as it goes (a run still going, or stopped early: scored over
the scenarios it reached).

USAGE: .venv/bin/python bench/llm_eval_report.py RESULT.json
       .venv/bin/python bench/llm_eval_report.py --rows-jsonl ROWS.jsonl
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from llm_eval import KINDS, as_deployed, score  # noqa: E402
from netsentinel.levels import LEVELS  # noqa: E402


def _cell(v) -> str:
    if v is None:
        return "–"
    return f"{v:.2f}" if isinstance(v, float) else str(v)


def _table(head: list[str], rows: list[list]) -> str:
    return "\n".join(["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
                     + ["| " + " | ".join(_cell(c) for c in r) + " |" for r in rows])


def from_rows(path: Path) -> list[dict]:
    """Score a rows file per run, as llm_eval.py would have at the end."""
    runs: dict[str, list] = {}
    for line in path.read_text().splitlines():
        if line.strip():
            r = json.loads(line)
            runs.setdefault(r.pop("run"), []).append(r)
    out = []
    for name, rows in runs.items():
        res = {"case": name, **score(rows)}
        if any("schema_valid" in r for r in rows):
            res["scope_unsettled"] = score(as_deployed(rows))
        out.append(res)
    return out


def report(results: list[dict]) -> str:
    named = []
    for res in results:
        name = "rules" if res["case"] == "rules" else "model"
        named.append((name, res))
        if "scope_unsettled" in res:
            named.append(("model, default scope", res["scope_unsettled"]))
    head = ["run", "scenarios", "accuracy", "malicious precision", "malicious recall",
            "benign precision", "benign recall", "asked", "schema-valid", "fallback",
            "latency p50 / p95 (s)", "load average p50 / max"]
    summary = [[n, r["scenarios"], r["accuracy"], r["malicious_precision"], r["malicious_recall"],
                r["benign_precision"], r["benign_recall"], r.get("asked", "–"),
                r.get("schema_valid_rate"), r.get("fallback_rate"),
                f"{r['latency_p50_s']} / {r['latency_p95_s']}" if "latency_p50_s" in r else "–",
                f"{r['load1_p50']} / {r['load1_max']}" if "load1_p50" in r else "–"]
               for n, r in named]
    parts = [_table(head, summary), "HIGH or CRITICAL, per kind (flagged / scenarios):",
             _table(["run", *KINDS], [[n, *(r["flagged_by_kind"][k] for k in KINDS)]
                                      for n, r in named])]
    for n, r in named:
        if "matrix" in r:
            parts += [f"Kind × final level, {n}:",
                      _table(["kind", *LEVELS], [[k, *(r["matrix"][k].get(lv, 0) for lv in LEVELS)]
                                                 for k in KINDS])]
        if r.get("llm_levels"):
            parts.append(f"The model's own answers, {n}: " + ", ".join(
                f"{r['llm_levels'].get(lv, 0)} {lv}" for lv in LEVELS) + ".")
    return "\n\n".join(parts) + "\n"


def main() -> int:
    p = argparse.ArgumentParser(prog="bench/llm_eval_report.py", description=__doc__.split("\n\n")[0])
    p.add_argument("result", nargs="?", type=Path, help="llm_eval.py's JSON line, saved")
    p.add_argument("--rows-jsonl", type=Path, help="llm_eval.py --rows-jsonl FILE, as far as it got")
    a = p.parse_args()
    if (a.result is None) == (a.rows_jsonl is None):
        p.error("give a result file or --rows-jsonl, one of them")
    results = from_rows(a.rows_jsonl) if a.rows_jsonl else json.loads(a.result.read_text())["results"]
    sys.stdout.write(report(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
