"""The import structure that keeps modules independent: no import cycle anywhere in the project's packages (every
import counts: in functions and under TYPE_CHECKING too), the services never import each other, the shared package
imports no service, job or training module, no training recipe imports another, training's modules import one
another at module level, and the benchmarks and training code never reach into tests/ nor load a source file by its
path."""

from __future__ import annotations

import ast
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
FIRST_PARTY = ("fashionsearch", "services", "training", "jobs", "testkit", "tests", "bench")
#: The packages whose import graph must have no cycle (tests/ is a tree of test modules, checked elsewhere).
PACKAGES = ("fashionsearch", "services", "jobs", "training", "testkit", "bench")
GENERATED = REPO_ROOT / "fashionsearch" / "v1"


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


def _absolute(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    """The module an ImportFrom names, with a relative one (`from . import x`) resolved against `module`."""
    if not node.level:
        return node.module or ""
    package = module if is_package else module.rpartition(".")[0]
    for _ in range(node.level - 1):
        package = package.rpartition(".")[0]
    return f"{package}.{node.module}" if node.module else package


def _owner(name: str, modules: set[str]) -> str | None:
    """The module of `modules` that `name` (a module or a name inside one) belongs to."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def _graph(folders: tuple[str, ...]) -> dict[str, set[str]]:
    """Module -> the project modules it imports, for every .py file under `folders` but the generated code."""
    files = [f for folder in folders for f in sorted((REPO_ROOT / folder).rglob("*.py")) if GENERATED not in f.parents]
    modules = {_module_name(f) for f in files}
    graph: dict[str, set[str]] = {}
    for f in files:
        module = _module_name(f)
        graph[module] = set()
        for node, _ in _imports(f):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                base = _absolute(node, module, f.name == "__init__.py")
                names = [base] + [f"{base}.{a.name}" for a in node.names]
            graph[module] |= {owner for n in names if (owner := _owner(n, modules)) not in (None, module)}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, successors = work[-1]
            for nxt in successors:
                if nxt not in index:
                    index[nxt] = low[nxt] = len(index)
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(sorted(graph[nxt]))))
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
    return found


def test_cycles_are_found():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": {"e"}}
    assert _cycles(graph) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_in_the_project():
    cycles = _cycles(_graph(PACKAGES))
    assert not cycles, "import cycles (modules that import one another, directly or not): " + "; ".join(
        " <-> ".join(c) for c in cycles
    )


def test_services_import_no_other_service_and_the_shared_package_imports_none():
    graph = _graph(PACKAGES)
    offending = []
    for module, imported in sorted(graph.items()):
        top = module.split(".")
        for other in sorted(imported):
            theirs = other.split(".")
            if top[0] == theirs[0] == "services" and len(top) > 1 and len(theirs) > 1 and theirs[1] != top[1]:
                offending.append(f"{module} imports {other}: services share code through fashionsearch/")
            if top[0] == "fashionsearch" and theirs[0] in ("services", "jobs", "training", "testkit", "bench"):
                offending.append(f"{module} imports {other}: the shared package depends on nothing above it")
            if top[0] in ("services", "jobs") and theirs[0] in ("training", "testkit", "bench"):
                offending.append(f"{module} imports {other}: production code imports no training or test code")
    assert not offending, offending


def test_recipes_import_no_recipe():
    """What recipes share lives in training/ (heads, embedding, view_cache, ...): a recipe is one model's recipe."""
    graph = _graph(("training",))
    offending = [
        f"{module} imports {other}"
        for module, imported in sorted(graph.items())
        if module.startswith("training.recipes.")
        for other in sorted(imported)
        if other.startswith("training.recipes.")
    ]
    assert not offending, offending


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
