"""Test modules import no other test module or conftest: what tests share lives in testkit/.

A test module imported by another runs its module-level code twice under two names, and moving or renaming a test
breaks tests elsewhere.
"""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def imported_names(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
        elif isinstance(node, ast.ImportFrom):
            names.add("." * node.level + (node.module or ""))
    return names


def test_no_test_module_imports_another_test_module():
    # Without __init__.py files pytest puts each test folder on sys.path, so a sibling is importable by bare name.
    local = {path.stem for path in TESTS.rglob("*.py")}
    offending = {}
    for path in sorted(TESTS.rglob("*.py")):
        bad = {
            name
            for name in imported_names(path)
            if name.startswith((".", "tests")) or name.split(".")[0] in local or name.split(".")[0] == "conftest"
        }
        if bad:
            offending[str(path.relative_to(TESTS))] = sorted(bad)
    assert not offending, f"move what these share into testkit/: {offending}"


def test_every_python_file_under_tests_is_a_test_module_or_a_conftest():
    helpers = [
        str(path.relative_to(TESTS))
        for path in TESTS.rglob("*.py")
        if not path.name.startswith("test_") and path.name != "conftest.py"
    ]
    assert not helpers, f"helpers belong in testkit/, not tests/: {sorted(helpers)}"
