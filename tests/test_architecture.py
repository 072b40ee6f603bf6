"""The package's layout holds: layers import only the layers below them, no import circles, small modules.

docs/architecture.md draws the layers. Imports inside functions count too (grimp reads every import
statement); imports under ``if TYPE_CHECKING:`` do not (they never run).
"""
from __future__ import annotations

from pathlib import Path

import grimp
import pytest

import acttail_lab

LAYERS = ("core", "spectral", "allocation", "sparsify", "measure", "report", "plots", "widgets", "cli")
"""Bottom to top: each layer may import only the layers before it."""
PACKAGE_DIR = Path(acttail_lab.__file__).parent
MAX_MODULE_LINES = 420


@pytest.fixture(scope="module")
def graph():
    return grimp.build_graph("acttail_lab", exclude_type_checking_imports=True)


def _layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in LAYERS else None


def test_every_module_sits_in_a_layer(graph):
    loose = sorted(m for m in graph.modules if m.count(".") == 1 and _layer(m) is None)
    # the package root, its __main__ and the documented compatibility alias are the only loose modules
    assert loose == ["acttail_lab.__main__", "acttail_lab.spectra"]


def test_layers_import_only_layers_below(graph):
    bad = []
    for module in graph.modules:
        here = _layer(module)
        if here is None:
            continue
        for imported in graph.find_modules_directly_imported_by(module):
            there = _layer(imported)
            if there is not None and LAYERS.index(there) > LAYERS.index(here):
                bad.append(f"{module} -> {imported}")
    assert not bad, "layer order broken:\n" + "\n".join(sorted(bad))


def _cycles(graph) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan's algorithm)."""
    index, low, stack, on_stack, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph.find_modules_directly_imported_by(v):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for module in sorted(graph.modules):
        if module not in index:
            visit(module)
    return out


def test_no_import_circles(graph):
    # a package __init__ that re-exports its submodules forms a trivial circle with them only if a
    # submodule imports the package itself: submodules import their siblings directly instead
    cycles = _cycles(graph)
    assert cycles == [], "import circles (move the shared piece into a third module):\n" + "\n".join(
        " <-> ".join(c) for c in cycles)


def test_the_explorer_circle_stays_gone(graph):
    # report.explorer imports report.explorer_costs (SlicePerplexity); the way back is closed for good, also
    # through a third module or an import inside a function
    assert graph.find_shortest_chain("acttail_lab.report.explorer", "acttail_lab.report.explorer_costs")
    assert graph.find_shortest_chain("acttail_lab.report.explorer_costs", "acttail_lab.report.explorer") is None


def test_lint_imports_also_checks_for_circles():
    import tomllib

    config = tomllib.loads((PACKAGE_DIR.parent / "pyproject.toml").read_text(encoding="utf-8"))
    contracts = config["tool"]["importlinter"]["contracts"]
    assert {c["type"] for c in contracts} >= {"layers", "acyclic_siblings"}
    assert next(c for c in contracts if c["type"] == "acyclic_siblings")["ancestors"] == ["acttail_lab"]


def test_no_module_is_large():
    sizes = {p.relative_to(PACKAGE_DIR).as_posix(): len(p.read_text().splitlines())
             for p in PACKAGE_DIR.rglob("*.py")}
    big = {name: n for name, n in sizes.items() if n > MAX_MODULE_LINES}
    assert not big, f"modules over {MAX_MODULE_LINES} lines (split them along one job each): {big}"


def test_every_exception_class_lives_in_core_errors():
    import ast

    elsewhere = []
    for path in PACKAGE_DIR.rglob("*.py"):
        if path.relative_to(PACKAGE_DIR).as_posix() == "core/errors.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and any(
                    getattr(b, "id", getattr(b, "attr", "")).endswith(("Error", "Exception")) for b in node.bases):
                elsewhere.append(f"{path.relative_to(PACKAGE_DIR)}: {node.name}")
    assert not elsewhere, f"define exceptions in core/errors.py: {elsewhere}"


def test_cycle_finder_finds_a_circle():
    class Fake:
        modules = {"a", "b", "c"}

        @staticmethod
        def find_modules_directly_imported_by(m):
            return {"a": {"b"}, "b": {"a"}, "c": set()}[m]

    assert _cycles(Fake()) == [["a", "b"]]
