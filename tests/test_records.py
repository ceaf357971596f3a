"""The records/ contract has one definition (netsentinel/records.py), and
docs/ARCHITECTURE.md's table describes exactly those files."""

import ast
import re
from pathlib import Path

from netsentinel import records

ROOT = Path(__file__).resolve().parent.parent


def _table_names() -> set[str]:
    doc = (ROOT / "docs" / "ARCHITECTURE.md").read_text()
    section = doc.split("## The records/ contract", 1)[1].split("\n## ", 1)[0]
    table = section.split("| file | writer(s) |", 1)[1]  # the files table, not the modes one
    names: set[str] = set()
    for line in table.splitlines()[2:]:
        if not line.startswith("| `"):
            break
        first_cell = line.split("|")[1]
        names.update(n.rstrip("/") for n in re.findall(r"`([^`]+)`", first_cell))
    return names


def test_every_records_file_has_its_row_and_every_row_a_name():
    in_table = _table_names()
    defined = set(records.FILES) | set(records.DROP_DIRS)
    assert defined - in_table == set(), "add these to docs/ARCHITECTURE.md's records table"
    assert in_table - defined == set(), "define these in netsentinel/records.py"
    assert f"records/{records.LOCK_NAME}" in (ROOT / "docs" / "ARCHITECTURE.md").read_text()


def test_history_files_follow_the_rotation_the_store_is_asked_for():
    assert records.history_files() == [records.HISTORY] + [
        f"{records.HISTORY}.{i}" for i in range(1, records.HISTORY_KEEP + 1)]


def test_only_records_and_store_name_records_files():
    # A string literal that is exactly a records/ file name, anywhere but in
    # records.py (and store.py, which uses them as defaults), is a second
    # definition that can drift.
    names = set(records.FILES) | {records.LOCK_NAME}
    allowed = {ROOT / "netsentinel" / "records.py", ROOT / "netsentinel" / "store.py"}
    sources = [*(ROOT / "netsentinel").rglob("*.py"), *(ROOT / "scripts").glob("*.py"),
               *(ROOT / "bench").glob("*.py"), *(ROOT / "ml").glob("*.py"),
               *(ROOT / f for f in ("unified_ebpf.py", "llm_analyzer.py", "dashboard.py",
                                    "user_whitelist.py"))]
    found = []
    for path in sources:
        if path in allowed:
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Constant) and node.value in names:
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {node.value!r}")
    assert found == [], "import the name from netsentinel.records instead"
