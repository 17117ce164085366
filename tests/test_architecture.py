"""The layout docs/architecture.md describes: no import cycles among the project's modules (every
import counted, deferred and TYPE_CHECKING ones included), entry points at the top of pipelines/,
and the rest of pipelines/ in packages named by what they hold."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("pipelines", "analysis", "dashboards", "benchmarks")
# `python -m pipelines.<name>` entry points, and the few shared basics beside them
ENTRY_POINTS = {"finetune", "evaluate", "harmonize", "baseline", "study", "sweep", "register", "upload_outputs"}
BASICS = {"__init__", "cli", "config", "registry", "models", "offline", "redaction", "padding", "vocabulary"}
SUBPACKAGES = {"data", "tasks", "train", "infer", "runs", "sweeps", "serving", "baselines", "studies"}


def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            found[".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")] = path
    return found


def import_graph() -> dict[str, set[str]]:
    """module -> the project modules it imports (a package's own __init__ left out)."""
    mods = modules()

    def resolve(name: str) -> str:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name

    graph = {}
    for name, path in mods.items():
        deps = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                for alias in node.names:
                    full = f"{node.module}.{alias.name}"
                    deps.add(full if full in mods else resolve(node.module))
            elif isinstance(node, ast.Import):
                deps.update(resolve(alias.name) for alias in node.names)
        graph[name] = {d for d in deps if d and d != name and not name.startswith(d + ".")}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (iterative Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
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


def test_cycle_finder_finds_a_planted_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_module_imports_one_that_depends_on_it():
    assert cycles(import_graph()) == []


def test_pipelines_top_level_holds_entry_points_basics_and_packages():
    top = {p.stem for p in (ROOT / "pipelines").glob("*.py")}
    assert top == ENTRY_POINTS | BASICS, sorted(top ^ (ENTRY_POINTS | BASICS))
    packages = {p.parent.name for p in (ROOT / "pipelines").glob("*/__init__.py")}
    assert packages == SUBPACKAGES
    for package in packages:
        doc = ast.get_docstring(ast.parse((ROOT / "pipelines" / package / "__init__.py").read_text()))
        assert doc, f"pipelines/{package}/__init__.py says what the package holds"
