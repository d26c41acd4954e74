"""The slice filter and the Slices page with AppTest, driven by the URL (digits: no metadata,
so its slices are the image properties and the true class)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.apptest import APP, VIEWS, run
from tests.projects import expected, write_config

SLICES = str(VIEWS / "slices.py")
LABELS = str(VIEWS / "labels.py")
DIGITS = {"model": "digits-cnn", "dataset": "digits-test"}


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = write_config(tmp_path_factory.mktemp("slices"))
    expected(path)
    return path


def _captions(at) -> list[str]:  # type: ignore[no-untyped-def]
    return [c.value for c in at.caption]


def test_a_slice_in_the_url_restricts_the_matrix(project: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    result = expected(project)
    threes = int((result.true == 3).sum())
    at = run(APP, project, monkeypatch, **DIGITS, where="class:3")
    assert not at.exception
    assert any(c.startswith(f"{threes} images · rows: true class") for c in _captions(at))
    assert any(f"{threes} images in the slice" in c for c in _captions(at))
    assert [b.label for b in at.button if b.label == "class = 3"]  # its chip
    at.button(key="slice:chip:0").click().run()  # removing the chip: every image again
    assert not at.exception
    assert "where" not in at.query_params
    total = len(result.index)
    assert any(c.startswith(f"{total:,} images · rows: true class") for c in _captions(at))


@pytest.mark.parametrize(
    "where", ["nosuch:1", ";;;", "class:eleven", "brightness:abc..", "class:3;class:4", "x" * 3000]
)
def test_a_bad_slice_is_named_and_the_whole_set_shown(
    project: Path,
    monkeypatch,
    where: str,  # type: ignore[no-untyped-def]
) -> None:
    result = expected(project)
    at = run(APP, project, monkeypatch, **DIGITS, where=where)
    assert not at.exception
    assert any("The slice in the link is not applied" in w.value for w in at.warning)
    total = len(result.index)
    assert any(c.startswith(f"{total:,} images · rows: true class") for c in _captions(at))


def test_the_slices_page_lists_columns_and_applies_a_slice(project: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    at = run(SLICES, project, monkeypatch, **DIGITS)
    assert not at.exception
    assert at.title[0].value.startswith("Slices")
    chosen = at.multiselect[0].value
    assert "class" in chosen and "brightness" in chosen  # a property and the true class
    assert len(at.get("plotly_chart")) == 1


def test_label_errors_page_keeps_to_the_slice(project: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    result = expected(project)
    threes = int((result.true == 3).sum())
    at = run(LABELS, project, monkeypatch, **DIGITS, where="class:3")
    assert not at.exception
    assert any(f"of {threes}** images" in c for c in _captions(at))


def test_patterns_page_keeps_to_the_slice(project: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from core.analysis.patterns import result_patterns

    result = expected(project)
    found = result_patterns(result)
    true_of_row = dict(zip(result.index.tolist(), result.true.tolist(), strict=True))
    with_threes = {
        i for i in range(len(found)) if any(true_of_row.get(int(r)) == 3 for r in found[i].rows)
    }
    at = run(
        str(VIEWS / "patterns.py"), project, monkeypatch, **DIGITS, where="class:3", flagged="0"
    )
    assert not at.exception
    cards = [h.value for h in at.html if "pattern-card" in h.value]
    shown = {int(n) - 1 for page in cards for n in re.findall(r"#(\d+) · true", page)}
    assert shown and shown <= with_threes  # only patterns with images in the slice
    assert all("in the slice" in page for page in cards)


def test_map_draws_only_the_slice(project: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import json

    from tests.test_patterns import _points

    result = expected(project)
    threes = int((result.true == 3).sum())
    at = run(str(VIEWS / "map.py"), project, monkeypatch, **DIGITS, where="class:3")
    assert not at.exception
    spec = json.loads(at.get("plotly_chart")[0].proto.spec)
    traces = [t for t in spec["data"] if t.get("type") == "scatter"]
    assert sum(_points(t) for t in traces) == threes
