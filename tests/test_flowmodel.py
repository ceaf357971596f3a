"""The shipped flow model: reproducible from the shipped data and script,
and a malformed model file is refused rather than trusted."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from netsentinel.analyzer.flowmodel import MODEL_PATH, FlowModel

ROOT = Path(__file__).resolve().parent.parent


def test_shipped_model_is_what_the_training_script_makes(tmp_path):
    out = tmp_path / "tree.json"
    r = subprocess.run([sys.executable, str(ROOT / "ml" / "train_flow_model.py"), "--out", str(out),
                        "--no-doc"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    fresh, shipped = json.loads(out.read_text()), json.loads(MODEL_PATH.read_text())
    assert fresh["tree"] == shipped["tree"] and fresh["classes"] == shipped["classes"]
    assert fresh["evaluation"] == shipped["evaluation"]
    assert "accuracy" in r.stdout


def test_evaluation_is_recorded_per_class():
    doc = json.loads(MODEL_PATH.read_text())
    per = {row["class"]: row for row in doc["evaluation"]["per_class"]}
    assert set(per) == set(doc["classes"])
    assert all(row["support"] > 0 for row in per.values())


@pytest.mark.parametrize("mutate,words", [
    (lambda d: d.update(features=["pps"]), "features do not match"),
    (lambda d: d["tree"]["left"].pop(), "different lengths"),
    (lambda d: d["tree"].update(left=[0] * len(d["tree"]["left"])), "cycle"),
])
def test_malformed_models_are_refused(mutate, words):
    doc = json.loads(MODEL_PATH.read_text())
    mutate(doc)
    with pytest.raises(ValueError, match=words):
        FlowModel(doc).predict({"packets": 10, "pps": 10.0, "window_s": 1.0})
