"""The import structure that keeps modules independent: training's modules import one another at module level and
without a cycle; the benchmarks and training code never reach into tests/ nor load a source file by its path."""

from __future__ import annotations

import ast
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
FIRST_PARTY = ("fashionsearch", "services", "training", "jobs", "testkit", "tests", "bench")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO_ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imported(node: ast.Import | ast.ImportFrom, modules: set[str]) -> set[str]:
    """The modules of `modules` that an import statement names (`from pkg import mod` counts as pkg.mod)."""
    if isinstance(node, ast.Import):
        return {a.name for a in node.names} & modules
    base = node.module or ""
    return ({base} | {f"{base}.{a.name}" for a in node.names}) & modules


def _imports(path: Path) -> list[tuple[ast.Import | ast.ImportFrom, bool]]:
    """Every import statement of the file, and whether it sits inside a function."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    inside: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            inside |= {id(sub) for sub in ast.walk(node)}
    return [(n, id(n) in inside) for n in ast.walk(tree) if isinstance(n, ast.Import | ast.ImportFrom)]


def _first_party(node: ast.Import | ast.ImportFrom) -> list[str]:
    names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
    return [n for n in names if n.split(".")[0] in FIRST_PARTY]


def test_training_imports_are_at_module_level_and_form_no_cycle():
    files = sorted((REPO_ROOT / "training").rglob("*.py"))
    modules = {_module_name(f) for f in files}
    graph: dict[str, set[str]] = {}
    late = []
    for f in files:
        graph[_module_name(f)] = set()
        for node, in_function in _imports(f):
            if in_function and _first_party(node):
                late.append(f"{f.relative_to(REPO_ROOT)}:{node.lineno}")
            graph[_module_name(f)] |= _imported(node, modules)
    assert not late, f"imports of project modules inside functions (hiding a cycle?): {late}"

    def cycle_from(module: str, path: list[str]) -> list[str] | None:
        for nxt in sorted(graph[module]):
            if nxt in path:
                return path[path.index(nxt) :] + [nxt]
            found = cycle_from(nxt, path + [nxt])
            if found:
                return found
        return None

    for module in sorted(graph):
        cycle = cycle_from(module, [module])
        assert cycle is None, f"import cycle: {' -> '.join(cycle)}"


def test_benchmarks_and_training_do_not_use_tests_or_load_files_by_path():
    offending = []
    for folder in ("bench", "training", "testkit"):
        for f in sorted((REPO_ROOT / folder).rglob("*.py")):
            text = f.read_text(encoding="utf-8")
            if "spec_from_file_location" in text:
                offending.append(f"{f.relative_to(REPO_ROOT)} loads a file by path")
            for node, _ in _imports(f):
                if any(n.split(".")[0] == "tests" for n in _first_party(node)):
                    offending.append(f"{f.relative_to(REPO_ROOT)}:{node.lineno} imports tests")
    assert not offending, offending
