"""The one field table of the analyzer/LLM settings (llm/config.FIELDS)
drives validation, the analyzer's flags, the dashboard's widgets and the
settings table in docs/ANALYZER.md; these tests keep the four in step."""

import json
from pathlib import Path

import pytest

from netsentinel.analyzer.cli import build_parser, _base_config
from netsentinel.dashboard import llm as page
from netsentinel.llm.config import DEFAULT_LLM_CONFIG, FIELD, FIELDS, validate_llm_config

DOC = Path(__file__).resolve().parent.parent / "docs" / "ANALYZER.md"
HEADER = "| key | default | range | flag | meaning |"


def docs_rows() -> list[str]:
    """The table as the field table says it should read."""
    rows = [HEADER, "| --- | --- | --- | --- | --- |"]
    for f in FIELDS:
        flags = ", ".join(f"`{x}`" for x in f.flags)
        meaning = f.help.replace("|", "\\|")
        rows.append(f"| `{f.name}` | `{json.dumps(f.default)}` | {f.range_text()} | {flags} | {meaning} |")
    return rows


def test_docs_table_matches_the_field_table():
    lines = DOC.read_text().splitlines()
    start = lines.index(HEADER)
    table = lines[start:start + len(FIELDS) + 2]
    expected = docs_rows()
    assert table == expected, "docs/ANALYZER.md settings table; it should read:\n" + "\n".join(expected)
    assert not lines[start + len(FIELDS) + 2].startswith("|"), "a row too many in the docs table"


def test_defaults_validate_and_every_bound_is_enforced():
    assert validate_llm_config({}) == DEFAULT_LLM_CONFIG
    for f in FIELDS:
        assert f.check(f.default) == f.default
        if f.kind in ("int", "float") and f.lo != f.hi:
            assert f.check(f.hi) == f.hi
            for bad in (f.lo - 1, f.hi + 1):
                with pytest.raises(ValueError, match=f"{f.name} must be between"):
                    validate_llm_config({f.name: bad})
        if f.kind == "choice":
            with pytest.raises(ValueError, match=f"{f.name} must be one of"):
                validate_llm_config({f.name: "nonsense"})


def test_every_flag_sets_its_setting():
    parser = build_parser()
    argv, want = [], {}
    for f in FIELDS:
        if not f.flags:
            continue
        value = (f.hi if f.kind in ("int", "float") else True if f.kind == "bool" else
                 f.choices[-1] if f.kind == "choice" else "http://127.0.0.1:9/v1" if f.kind == "url"
                 else "m" if f.kind == "model" else ["/tmp/a", "/tmp/b"])
        want[f.name] = value
        argv += [f.flags[-1]] if f.kind == "bool" else \
            [x for v in (value if isinstance(value, list) else [value]) for x in (f.flags[-1], str(v))]
    cfg = _base_config(parser.parse_args(argv))
    assert {k: cfg[k] for k in want} == want
    assert _base_config(parser.parse_args([])) == DEFAULT_LLM_CONFIG  # no flag: nothing set
    help_text = parser.format_help()
    assert "(default 15; 2–65535)" in help_text  # --scan-ports, from the table


def test_dashboard_widgets_come_from_the_table():
    assert all(FIELD[f.name] is f for f in page.WIDGETS.values())
    for key, f in page.WIDGETS.items():
        assert f.label, f"{f.name} is on the form but has no label"
        assert page.to_setting(f, page.to_widget(f, f.default)) == f.default
    labelled = {f.name for f in FIELDS if f.label}
    assert labelled == {f.name for f in page.WIDGETS.values()}, "a labelled field not on the form"
    assert FIELD["backend"].choices[0] == "auto"
