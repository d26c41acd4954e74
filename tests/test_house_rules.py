"""The house rules, checked on the source of ``core/`` and ``dashboard/`` (nothing is imported):

- no import cycle among their modules;
- no ``core`` module imports streamlit;
- the dashboard's layers point down: ``state`` < ``parts`` < ``views`` < ``app``;
- no module is over :data:`MAX_LINES` lines, unless :data:`LONG_MODULES` lists it with a reason.

How the import graph is read (``ast``):

- Every ``import a.b`` and ``from a import b`` of a module counts, at its top or inside a
  function. A lazy import runs too, only later, and a cycle through one still ties the two
  modules together: neither can be understood, tested or moved without the other, and which
  names exist depends on the order they load in. A lazy import stays the way to put off a heavy
  import (torch), never the way around a cycle.
- Imports under ``if TYPE_CHECKING:`` do not count: they never run.
- ``from a import b`` is an edge to module ``a.b`` when that is a module of ``core``/``dashboard``,
  else to ``a`` itself (its ``__init__``); relative imports are resolved against the importing
  module's package.
- The parent packages an import runs implicitly (``import a.b`` runs ``a/__init__``) are not
  edges, and neither is ``importlib.import_module`` (``core/__init__`` loads its public names that
  way on first use).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("core", "dashboard")
MAX_LINES = 600

#: Cycles allowed for now, each with why. An entry whose cycle is gone must leave the set.
ALLOWED_CYCLES: dict[frozenset[str], str] = {}

#: Modules allowed over MAX_LINES, each with why. An entry back under the limit must leave.
LONG_MODULES: dict[str, str] = {
    "core/results/store.py": (
        "the result folder's format in one place: the writer and the reader share its column "
        "layout, crash-safety and disk checks; not split yet (the cut: writer / reader)"
    ),
    "core/analysis/patterns.py": (
        "the pattern ranking (clustering, merging, scoring, the stored ranking) in one module; "
        "not split yet (the cut: the map clustering into a module of its own)"
    ),
}

#: The dashboard's layers, lowest first: a module imports its own layer and those below it.
DASHBOARD_LAYERS = ("dashboard.state", "dashboard.parts", "dashboard.views", "dashboard.app")


def modules() -> dict[str, Path]:
    """Every module of the packages, by dotted name (a package by its own name)."""
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imported_names(path: Path, package: str) -> list[str]:
    """The dotted names a module imports, wherever the import stands, but under
    ``if TYPE_CHECKING:``; ``from a import b`` gives ``a.b`` (the caller decides whether that is
    a module). ``package`` resolves relative imports."""
    names: list[str] = []

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _type_checking(child):
                for other in child.orelse:
                    visit_statement(other)
                continue
            visit_statement(child)

    def visit_statement(node: ast.AST) -> None:
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, *([node.module] if node.module else [])])
            names.extend(f"{base}.{alias.name}" for alias in node.names)
        visit(node)

    visit(ast.parse(path.read_text(encoding="utf-8")))
    return names


def import_graph() -> dict[str, set[str]]:
    """Module → the modules of the packages it imports (see the module docstring)."""
    found = modules()
    graph: dict[str, set[str]] = {}
    for name, path in found.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges = set()
        for imported in imported_names(path, package):
            parent = imported.rpartition(".")[0]
            if imported in found:
                edges.add(imported)
            elif parent in found:  # ``from a import b`` where b is a name in a
                edges.add(parent)
        edges.discard(name)
        graph[name] = edges
    return graph


def cycles(graph: dict[str, set[str]]) -> list[frozenset[str]]:
    """The strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[frozenset[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(frozenset(component))
    return found


def path_around(component: frozenset[str], graph: dict[str, set[str]]) -> list[str]:
    """One cycle through the component's first module, as a list of modules (for a message)."""
    first = min(component)
    trail = {first: [first]}
    queue = [first]
    while queue:
        node = queue.pop(0)
        for child in sorted(graph[node] & component):
            if child == first:
                return [*trail[node], first]
            if child not in trail:
                trail[child] = [*trail[node], child]
                queue.append(child)
    return sorted(component)  # unreachable for a strongly connected component


def test_the_graph_is_read_as_documented(tmp_path: Path) -> None:
    """Lazy imports count, TYPE_CHECKING ones do not, ``from a import b`` names module a.b or a,
    relative imports resolve against the package."""
    source = tmp_path / "m.py"
    source.write_text(
        "from typing import TYPE_CHECKING\n"
        "import core.errors\n"
        "from . import sibling\n"
        "from ..results import Results\n"
        "if TYPE_CHECKING:\n"
        "    from dashboard.parts import gallery\n"
        "else:\n"
        "    import core.config\n"
        "def f():\n"
        "    from core.data.datasets import ImageDataset\n"
    )
    assert imported_names(source, "core.analysis") == [
        "typing.TYPE_CHECKING",
        "core.errors",
        "core.analysis.sibling",
        "core.results.Results",
        "core.config",
        "core.data.datasets.ImageDataset",
    ]
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert cycles(graph) == [frozenset("abc")]
    assert path_around(frozenset("abc"), graph) == ["a", "b", "c", "a"]


def test_no_import_cycles() -> None:
    graph = import_graph()
    assert {"core.errors", "dashboard.app", "dashboard.state.resources"} <= set(graph)
    found = cycles(graph)
    new = [" → ".join(path_around(c, graph)) for c in found if c not in ALLOWED_CYCLES]
    assert not new, "import cycles:\n" + "\n".join(new)
    gone = [sorted(c) for c in ALLOWED_CYCLES if c not in found]
    assert not gone, f"no longer cycles, remove them from ALLOWED_CYCLES: {gone}"


def test_core_never_imports_streamlit() -> None:
    """Anywhere in a core module, lazily or for type checking too."""
    offenders = sorted(
        name
        for name, path in modules().items()
        if name.split(".")[0] == "core"
        and any(i.split(".")[0] == "streamlit" for i in imported_names(path, name))
    )
    assert not offenders, f"core modules importing streamlit: {offenders}"


def _dashboard_layer(name: str) -> int:
    for level, prefix in enumerate(DASHBOARD_LAYERS):
        if name == prefix or name.startswith(prefix + "."):
            return level
    return 0  # the package itself


def test_the_dashboard_layers_point_down() -> None:
    """state draws nothing and knows no part; parts know no page; a page imports no page."""
    upward = sorted(
        f"{name} → {other}"
        for name, edges in import_graph().items()
        if name.startswith("dashboard")
        for other in edges
        if other.startswith("dashboard")
        and (
            _dashboard_layer(other) > _dashboard_layer(name)
            or (_dashboard_layer(other) == _dashboard_layer(name) == 2)
        )
    )
    assert not upward, f"dashboard imports pointing up: {upward}"


def test_modules_stay_short() -> None:
    lengths = {
        path.relative_to(ROOT).as_posix(): len(path.read_text(encoding="utf-8").splitlines())
        for path in modules().values()
    }
    long = sorted(
        f"{p} ({n} lines)" for p, n in lengths.items() if n > MAX_LINES and p not in LONG_MODULES
    )
    assert not long, f"modules over {MAX_LINES} lines (split them, or list why): {long}"
    short = sorted(p for p in LONG_MODULES if lengths.get(p, 0) <= MAX_LINES)
    assert not short, f"back under {MAX_LINES} lines (or gone), remove from LONG_MODULES: {short}"
