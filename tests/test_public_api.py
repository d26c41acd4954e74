"""The public surface of ``core``: ``__all__`` lists are true, and streamlit stays out."""

from __future__ import annotations

import importlib
import pkgutil
import subprocess
import sys
import types
from pathlib import Path

import pytest

import core

REPO = Path(__file__).resolve().parents[1]
# every module of the package (new ones included), except the ``python -m core`` entry point
MODULES = sorted(
    m.name
    for m in pkgutil.walk_packages(core.__path__, "core.")
    if not m.name.endswith("__main__") and not m.name.rsplit(".", 1)[1].startswith("_")
)


def test_modules_found() -> None:
    assert {
        "core.config",
        "core.data.models",
        "core.data.datasets",
        "core.analysis.metrics",
    } <= set(MODULES)


def test_core_all_is_exactly_its_public_names() -> None:
    public = {
        name
        for name in dir(core)
        if not name.startswith("_") and not isinstance(getattr(core, name), types.ModuleType)
    }
    assert set(core.__all__) == public == set(core._EXPORTS)
    assert len(core.__all__) == len(set(core.__all__))
    assert core.__all__ == sorted(core.__all__)


def test_core_names_load_on_first_use() -> None:
    """``import core`` imports no submodule: a command that only reads stored results must
    not wait seconds for torch."""
    code = "import sys, core\nprint([m for m in sys.modules if m.startswith(('core.', 'torch'))])"
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert done.stdout.strip() == "[]", done.stderr
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        core.nothing  # noqa: B018


@pytest.mark.parametrize("name", core.__all__)
def test_core_exports_exist_and_come_from_a_core_module(name: str) -> None:
    value = getattr(core, name)
    home = importlib.import_module(value.__module__)
    assert home.__name__.startswith("core.")
    assert name in home.__all__  # re-exported from the module that declares it
    assert getattr(home, name) is value


@pytest.mark.parametrize("module_name", MODULES)
def test_module_all_names_exist(module_name: str) -> None:
    module = importlib.import_module(module_name)
    assert isinstance(module.__all__, list | tuple), f"{module_name} has no __all__"
    assert len(module.__all__) == len(set(module.__all__))
    for name in module.__all__:
        assert hasattr(module, name), f"{module_name}.__all__ lists missing {name!r}"
        assert not name.startswith("_")


def test_core_never_imports_streamlit() -> None:
    code = (
        "import importlib, sys\n"
        f"for name in {MODULES!r}:\n"
        "    importlib.import_module(name)\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] == 'streamlit')\n"
        "assert not loaded, loaded\n"
        "print('ok')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


# the layers of core, lowest first: a module may import its own layer and the ones below it
LAYERS = ["core.errors core.config", "core.data core.explain", "core.results", "core.analysis"]


def _layer(module: str) -> int:
    for level, names in enumerate(LAYERS):
        if any(module == n or module.startswith(n + ".") for n in names.split()):
            return level
    return len(LAYERS)  # core.notes, core.cli, core itself: on top


@pytest.mark.parametrize("module_name", [m for m in MODULES if _layer(m) < len(LAYERS)])
def test_imports_point_down_the_layers(module_name: str) -> None:
    """UI → analysis → results → data/explain → config/errors, never back up."""
    import ast

    module = importlib.import_module(module_name)
    assert module.__file__ is not None
    tree = ast.parse(Path(module.__file__).read_text(encoding="utf-8"))
    imported = {
        node.module
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("core")
    } | {
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
        if alias.name.startswith("core")
    }
    upward = sorted(name for name in imported if _layer(name) > _layer(module_name))
    assert not upward, f"{module_name} imports {upward} from a higher layer"
