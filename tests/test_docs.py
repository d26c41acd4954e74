"""The documentation cannot drift: every config key the loader accepts is in docs/config.md,
every relative link resolves, and the README stays a short front page with its two commands."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

import core.config
from core.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
CONFIG_DOC = ROOT / "docs" / "config.md"
README = ROOT / "README.md"

# The section of docs/config.md that documents each kind of key.
SECTIONS = {"top": "Top level", "models": "`[[models]]`", "datasets": "`[[datasets]]`"}


def _rejected(tmp_path: Path, text: str) -> set[str]:
    """The keys the loader allows, read from its message for an unknown key in ``text``."""
    path = tmp_path / "probe.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match="unknown key") as caught:
        core.config.load_config(path)
    allowed = re.search(r"allowed: (\[.*?\])", str(caught.value))
    assert allowed is not None, str(caught.value)
    return set(ast.literal_eval(allowed.group(1)))


def accepted_keys(tmp_path: Path) -> dict[str, set[str]]:
    """Every key the config loader accepts, by where it goes: asked of the loader itself (an
    unknown key makes it list the allowed ones), plus any other ``*_KEYS`` set of names in
    core/config.py (a table added later is checked too)."""
    model = '[[models]]\nname = "m"\narchitecture = "resnet18"\nweights = "w.pt"\n'
    dataset = '[[datasets]]\nname = "d"\nroot = "."\n'
    found = {
        "top": _rejected(tmp_path, "zz_not_a_key = 1\n" + model + dataset),
        "models": _rejected(tmp_path, model + "zz_not_a_key = 1\n" + dataset),
        "datasets": _rejected(tmp_path, model + dataset + "zz_not_a_key = 1\n"),
    }
    known = set().union(*found.values())
    for name, value in vars(core.config).items():
        if name.endswith("_KEYS") and isinstance(value, (set, frozenset)):
            extra = {str(key) for key in value} - known
            if extra:
                found.setdefault("other", set()).update(extra)
    return found


def documented_keys(text: str) -> dict[str, set[str]]:
    """Keys documented as table rows (``| `key` | ...``), per ``## `` section title."""
    sections: dict[str, set[str]] = {}
    current = ""
    for line in text.splitlines():
        if line.startswith("## "):
            current = line[3:].strip()
        row = re.match(r"\|\s*`([A-Za-z_][A-Za-z0-9_]*)`\s*\|", line)
        if row:
            sections.setdefault(current, set()).add(row.group(1))
    return sections


def missing_keys(accepted: dict[str, set[str]], text: str) -> list[str]:
    """``where: key`` for each accepted key without a table row in its section of ``text``."""
    documented = documented_keys(text)
    anywhere = set().union(*documented.values()) if documented else set()
    missing = []
    for where, keys in accepted.items():
        rows = documented.get(SECTIONS[where], set()) if where in SECTIONS else anywhere
        missing += [f"{where}: {key}" for key in sorted(keys - rows)]
    return missing


def test_the_loader_accepts_what_a_config_uses(tmp_path: Path) -> None:
    accepted = accepted_keys(tmp_path)
    assert {"cache_dir", "models", "datasets"} <= accepted["top"]
    assert {"name", "weights", "architecture", "layer"} <= accepted["models"]
    assert {"name", "root", "csv", "max_pixels"} <= accepted["datasets"]


def test_every_accepted_config_key_is_documented(tmp_path: Path) -> None:
    missing = missing_keys(accepted_keys(tmp_path), CONFIG_DOC.read_text(encoding="utf-8"))
    assert not missing, f"docs/config.md lacks a table row for: {', '.join(missing)}"


def test_no_documented_key_is_refused_by_the_loader(tmp_path: Path) -> None:
    accepted = accepted_keys(tmp_path)
    documented = documented_keys(CONFIG_DOC.read_text(encoding="utf-8"))
    for where, title in SECTIONS.items():
        unknown = documented.get(title, set()) - accepted[where]
        assert not unknown, f"docs/config.md's {title} documents unknown keys {sorted(unknown)}"


def test_a_key_left_out_of_the_reference_is_caught(tmp_path: Path) -> None:
    text = CONFIG_DOC.read_text(encoding="utf-8")
    without = "\n".join(line for line in text.splitlines() if not line.startswith("| `max_pixels`"))
    assert missing_keys(accepted_keys(tmp_path), without) == ["datasets: max_pixels"]
    # a key documented in another section does not count for this one
    moved = text.replace("## `[[datasets]]`", "## `[[datasets]]`\n\n## elsewhere", 1)
    assert "datasets: root" in missing_keys(accepted_keys(tmp_path), moved)


def _markdown_files() -> list[Path]:
    return [README, *sorted((ROOT / "docs").glob("*.md"))]


def _anchors(doc: Path) -> set[str]:
    """GitHub's anchors for the headings of ``doc``."""
    titles = re.findall(r"^#+ (.+)$", doc.read_text(encoding="utf-8"), flags=re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", title.strip().lower()).replace(" ", "-") for title in titles}


@pytest.mark.parametrize("doc", _markdown_files(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_relative_links_resolve(doc: Path) -> None:
    text = doc.read_text(encoding="utf-8")
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target):
            continue
        path, _, anchor = target.partition("#")
        found = doc.parent / path if path else doc
        if not found.exists() or (anchor and anchor not in _anchors(found)):
            broken.append(target)
    assert not broken, f"{doc.name}: links to missing files or headings {broken}"


def test_readme_is_a_short_front_page_with_the_two_commands() -> None:
    text = README.read_text(encoding="utf-8")
    lines = text.splitlines()
    assert len(lines) <= 250
    assert not [line for line in lines if re.search(r"20\d\d-\d\d-\d\d", line)]
    assert "pip install -r requirements.txt && streamlit run dashboard/app.py" in lines
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    assert ci[-1] in lines, "README's test command differs from the one .ci/run runs"
