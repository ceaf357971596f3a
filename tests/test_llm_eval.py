"""bench/llm_eval.py at its --quick size (one scenario of each kind), with
the rules and the shipped SmolLM2-135M model: it must finish and print one
well-formed JSON result line whose numbers add up. Quality is not asserted
here (docs/llm_eval.md has the full run); schema validity is, because
constrained decoding guarantees it."""

from __future__ import annotations

import json
import subprocess

from netlab import ROOT, VENV_PY


def test_llm_eval_quick_rules_and_small_model():
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
