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
    f"core.{m.name}"
    for m in pkgutil.iter_modules(core.__path__)
    if m.name != "__main__" and not m.name.startswith("_")
)


def test_modules_found() -> None:
    assert {"core.config", "core.models", "core.datasets", "core.metrics"} <= set(MODULES)


def test_core_all_is_exactly_its_public_names() -> None:
    public = {
        name
        for name, value in vars(core).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }
    assert set(core.__all__) == public
    assert len(core.__all__) == len(set(core.__all__))
    assert core.__all__ == sorted(core.__all__)


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
