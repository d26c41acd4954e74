"""The Patterns page and the cell view's pattern filter with AppTest, driven by the URL."""

from __future__ import annotations

import html
import re
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from core import cell_rows, result_patterns
from core.analysis.gallery import sort_rows
from tests.apptest import APP, VIEWS, run
from tests.projects import expected, write_config

PATTERNS = str(VIEWS / "patterns.py")


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = write_config(tmp_path_factory.mktemp("patterns-apptest"))
    expected(path)  # fill the disk cache once
    return path


def _cards(at: AppTest, css: str) -> list[tuple[int, int, int]]:
    """(true, pred, pattern) of each pattern card inside elements of class ``css``."""
    found = []
    for h in at.html:
        if f'class="{css}"' in h.value:
            found += re.findall(
                r'class="pattern-card" data-true="(\d+)" data-pred="(\d+)" data-pattern="(\d+)"',
                h.value,
            )
    return [(int(t), int(p), int(k)) for t, p, k in found]


def test_patterns_page_lists_the_ranked_patterns_with_links(project: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    found = result_patterns(expected(project))
    at = run(PATTERNS, project, monkeypatch, flagged="0")
    assert not at.exception
    cards = _cards(at, "pattern-grid")
    want = [(found[i].true, found[i].pred, found[i].cluster) for i in range(min(12, len(found)))]
    assert cards == want
    page = next(h.value for h in at.html if 'class="pattern-grid"' in h.value)
    first = found[0]
    link = f"./?model=digits-cnn&amp;dataset=digits-test&amp;cell={first.true}%2C{first.pred}"
    assert f'href="{link}&amp;pattern={first.cluster}"' in page


def test_patterns_page_filters_errors_and_flagged(project: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    found = result_patterns(expected(project))
    at = run(PATTERNS, project, monkeypatch, flagged="0", show="errors")
    assert not at.exception
    assert all(t != p for t, p, _ in _cards(at, "pattern-grid"))
    at = run(PATTERNS, project, monkeypatch, show="correct")  # flagged only (the default)
    flagged = [i for i in range(len(found)) if found[i].flagged and found[i].diagonal]
    assert len(_cards(at, "pattern-grid")) == min(12, len(flagged))
    if not flagged:
        assert any("Flagged only" in s.value for s in at.success)


def test_cell_view_filters_by_the_pattern_in_the_url(project: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    result = expected(project)
    found = result_patterns(result)
    pattern = max((found[i] for i in range(len(found))), key=lambda p: p.clusters_in_cell)
    cell = f"{pattern.true},{pattern.pred}"
    at = run(APP, project, monkeypatch, cell=cell, pattern=str(pattern.cluster), page_size="96")
    assert not at.exception
    rows = sort_rows(cell_rows(result.predictions, pattern.true, pattern.pred), "confidence", False)
    paths = rows[rows["index"].isin(pattern.rows)]["path"].tolist()
    shown = [
        html.unescape(name)
        for h in at.html
        for name in re.findall(r'class="cam-card".*?<strong>(.*?)</strong>', h.value)
    ]
    assert shown == paths[:96] and len(paths) == pattern.images
    assert any(f"in pattern {pattern.cluster}" in s.value for s in at.subheader)
    strip = _cards(at, "pattern-strip")
    assert strip == [
        (pattern.true, pattern.pred, k) for k in range(1, pattern.clusters_in_cell + 1)
    ]
    assert at.selectbox(key="url:pattern").value == pattern.cluster
    at.selectbox(key="url:pattern").set_value(0).run()  # back to all of the cell's images
    assert not at.exception
    assert "pattern" not in at.query_params or at.query_params["pattern"] in ("0", ["0"])
    assert any(f"{len(rows)} images" in s.value for s in at.subheader)


def test_a_pattern_the_cell_does_not_have_shows_all_its_images(project: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    result = expected(project)
    at = run(APP, project, monkeypatch, cell="9,9", pattern="99")
    assert not at.exception
    assert any("no pattern 99" in c.value for c in at.caption)
    n = len(cell_rows(result.predictions, 9, 9))
    assert any(f"true *9* → predicted *9*: {n} images" in s.value for s in at.subheader)


def test_a_result_without_maps_says_why_it_has_no_patterns(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    path = write_config(tmp_path)
    text = path.read_text().replace('name = "digits-cnn"\n', 'name = "digits-cnn"\nmaps = false\n')
    path.write_text(text)
    expected(path)
    at = run(PATTERNS, path, monkeypatch)
    assert not at.exception
    assert any("without Grad-CAM maps" in w.value for w in at.warning)
