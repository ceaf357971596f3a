"""bench/llm_eval.py at its --quick size (one scenario of each kind), with
the rules and the shipped SmolLM2-135M model: it must finish and print one
well-formed JSON result line whose numbers add up. Quality is not asserted
here (docs/llm_eval.md has the full run); schema validity is, because
constrained decoding guarantees it."""

from __future__ import annotations

import json
import subprocess

from netlab import ROOT, VENV_PY


def test_llm_eval_quick_rules_and_small_model(tmp_path):
    r = subprocess.run([VENV_PY, str(ROOT / "bench" / "llm_eval.py"), "--quick", "--small-model",
                        "--rows", "--timeout", "600"],
                       capture_output=True, text=True, timeout=1800, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-2000:]
    (line,) = [x for x in r.stdout.splitlines() if x.strip()]
    out = json.loads(line)
    assert out["bench"] == "llm_eval" and out["quick"] is True and out["params"]["scenarios"] == 6
    rules, model = out["results"]
    assert rules["case"] == "rules" and "asked" not in rules
    assert model["case"].startswith("huggingface") and model["asked"] == 6
    assert model["schema_valid_rate"] == 1.0 and model["fallback_rate"] == 0.0
    for res in (rules, model):
        assert sum(sum(m.values()) for m in res["matrix"].values()) == 6
        assert [x["kind"] for x in res["rows"]] == ["benign", "reverse_shell", "miner", "scanner",
                                                    "dropper", "injection"]
    # The rule floor: the model run never ends below the rules' level.
    levels = ["INFO", "MEDIUM", "HIGH", "CRITICAL"]
    for a, b in zip(rules["rows"], model["rows"]):
        assert levels.index(b["level"]) >= levels.index(a["level"])
    # The default scope's view asks what the rules left open, plus what a
    # behaviour signal sends anyway; the docs' tables render from this line.
    deployed = model["scope_unsettled"]
    assert deployed["scenarios"] == 6 and deployed["asked_by_default"] == model["asked_by_default"]
    table = report(tmp_path, out)
    assert "| rules | 6 |" in table and "| model | 6 |" in table and "| model, default scope | 6 |" in table


def report(tmp_path, out: dict) -> str:
    f = tmp_path / "result.json"
    f.write_text(json.dumps(out))
    r = subprocess.run([VENV_PY, str(ROOT / "bench" / "llm_eval_report.py"), str(f)],
                       capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_rules_only_run_and_a_partial_rows_file(tmp_path):
    """Rules only over all 62 scenarios: 8 are settled by a port rule but
    carry a behaviour signal (reverse shells on 443, 53, 80, 22, 8080, a
    fetch-and-run), so the default scope puts them to a model. The rows file
    written as the run goes is scored the same as the final line."""
    rows = tmp_path / "rows.jsonl"
    r = subprocess.run([VENV_PY, str(ROOT / "bench" / "llm_eval.py"), "--rows-jsonl", str(rows)],
                       capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-2000:]
    (rules,) = json.loads(r.stdout)["results"]
    assert rules["scenarios"] == 62 and rules["asked_on_signals"] == 8
    assert rules["benign_recall"] == 1.0                    # no benign scenario is flagged
    assert len(rows.read_text().splitlines()) == 62
    partial = subprocess.run([VENV_PY, str(ROOT / "bench" / "llm_eval_report.py"),
                              "--rows-jsonl", str(rows)], capture_output=True, text=True,
                             timeout=60, cwd=ROOT)
    assert partial.returncode == 0, partial.stderr
    assert partial.stdout == report(tmp_path, json.loads(r.stdout))
