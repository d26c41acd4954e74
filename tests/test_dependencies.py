"""The lock (constraints.txt) pins every package the requirement files name, and what they
depend on in turn, at versions the requirements accept."""

from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
INSTALLERS = {"pip", "setuptools", "wheel"}  # part of every environment; pip freeze leaves them out


def _requirements(name: str) -> list[Requirement]:
    """The requirements of one file, following ``-r`` includes (``-c`` lines are the lock)."""
    found: list[Requirement] = []
    for line in (ROOT / name).read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line.startswith("-r "):
            found += _requirements(line[3:].strip())
        elif line and not line.startswith("-"):
            found.append(Requirement(line))
    return found


def _lock() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            match = re.fullmatch(r"([A-Za-z0-9_.\-]+)==([^\s;]+)", line)
            assert match, f"constraints.txt: not an exact pin: {line!r}"
            pins[canonicalize_name(match[1])] = match[2]
    return pins


def test_requirements_read_the_lock() -> None:
    lines = (ROOT / "requirements.txt").read_text(encoding="utf-8").splitlines()
    assert "-c constraints.txt" in lines


@pytest.mark.parametrize("name", ["requirements.txt", "requirements-dev.txt"])
def test_the_lock_pins_every_requirement_at_an_accepted_version(name: str) -> None:
    lock = _lock()
    for req in _requirements(name):
        pinned = lock.get(canonicalize_name(req.name))
        assert pinned is not None, f"{req.name} ({name}) is not in constraints.txt"
        assert req.specifier.contains(pinned, prereleases=True), f"{req} vs lock {pinned}"


def test_the_lock_covers_what_the_requirements_depend_on() -> None:
    """Walk the installed packages' own requirements (with their extras and markers) from
    requirements-dev.txt down: every package reached is pinned."""
    lock = _lock()
    env = default_environment()
    todo = [(r, tuple(r.extras)) for r in _requirements("requirements-dev.txt")]
    seen: set[str] = set()
    while todo:
        req, extras = todo.pop()
        name = canonicalize_name(req.name)
        if name in seen or name in INSTALLERS:
            continue
        seen.add(name)
        assert name in lock, f"{req.name} is installed for the requirements but not locked"
        for text in metadata.requires(req.name) or []:
            dep = Requirement(text)
            wanted = [{**env, "extra": e} for e in extras] or [{**env, "extra": ""}]
            if dep.marker is None or any(dep.marker.evaluate(w) for w in wanted):
                todo.append((dep, tuple(dep.extras)))
