"""The "Suspected label errors" and "Compare models" pages with AppTest, driven by the URL."""

from __future__ import annotations

import html
import re
import sys
from pathlib import Path

import numpy as np
import pytest

from core import load_config
from core.analysis.comparison import Agreement, compare
from core.analysis.label_quality import label_quality
from core.data.datasets import dataset_key
from core.notes import NotesStore
from dashboard.state.analyses import arrays, probabilities
from tests.apptest import APP, VIEWS, card_paths, run
from tests.projects import ROOT, expected, write_config

sys.path.insert(0, str(ROOT / "sample_models"))
from plant_labels import plant

LABELS = str(VIEWS / "labels.py")
COMPARE = str(VIEWS / "compare.py")


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = plant(tmp_path_factory.mktemp("planted"), "digits-test", count=8)
    expected(path, dataset="digits-test-planted")  # fill the disk cache once
    return path


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = write_config(tmp_path_factory.mktemp("compare"))
    expected(path)
    expected(path, model="digits-cnn-shifted")
    return path


def test_label_errors_ranked_and_tagged(planted: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    result = expected(planted, dataset="digits-test-planted")
    rows, probs = arrays(result), probabilities(result)
    ranked = label_quality(rows.true, probs).ranked_issues()
    at = run(LABELS, planted, monkeypatch)
    assert not at.exception
    assert any(f"flags **{len(ranked)} of 540**" in c.value for c in at.caption)
    cards = [
        (int(rank), html.unescape(path))
        for h in at.html
        for path, rank in re.findall(
            r'class="cam-card".*?<strong>(.*?)</strong>.*?<b>#(\d+) ', h.value
        )
    ]  # two columns of cards: ranks 1, 3, 5... on the left, 2, 4, 6... on the right
    assert [path for _, path in sorted(cards)] == list(rows.paths[ranked])
    first = sorted(cards)[0][1]
    buttons = [b for b in at.button if b.label == "label error"]
    assert len(buttons) == len(ranked) and buttons[0].disabled  # no author yet
    at.sidebar.text_input[0].input("Ada").run()
    next(b for b in at.button if b.label == "label error").click().run()
    assert not at.exception
    config = load_config(planted)

    store = NotesStore(config.notes_db)
    assert store.tags(dataset_key(config.dataset("digits-test-planted")), first) == {"label error"}
    next(b for b in at.button if b.label == "label ok").click().run()
    assert store.tags(dataset_key(config.dataset("digits-test-planted")), first) == {"label ok"}


def test_compare_cell_from_the_url(project: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    a, b = (arrays(expected(project, model=m)) for m in ("digits-cnn-shifted", "digits-cnn"))
    result = compare(a, b)
    fixed = result.cell_positions(Agreement.FIXED)
    assert len(fixed) > 0  # the shifted input normalisation (A) costs accuracy
    at = run(
        COMPARE, project, monkeypatch, model="digits-cnn-shifted", model_b="digits-cnn",
        agree="fixed",
    )  # fmt: skip
    assert not at.exception
    assert any(f"{Agreement.FIXED.label}: {len(fixed)} images" in s.value for s in at.subheader)
    assert card_paths(at) == list(result.paths[fixed][:12])
    assert at.metric[0].value == f"{result.p_value():.3g}"
    at = run(
        COMPARE, project, monkeypatch, model="digits-cnn-shifted", model_b="digits-cnn",
        agree="fixed", csort="loss",
    )  # fmt: skip
    drops = result.cell_positions(Agreement.FIXED, descending=False)
    assert card_paths(at) == list(result.paths[drops][:12])
    assert not np.array_equal(drops[:12], fixed[:12]) or len(fixed) == 1


def test_compare_refuses_a_mismatched_pair(project: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    text = project.read_text().replace(
        'name = "digits-cnn-shifted"', 'name = "digits-cnn-shifted"\ndatasets = ["digits-even"]'
    )
    other = project.parent / "mismatch.toml"
    other.write_text(text)
    at = run(COMPARE, other, monkeypatch, model="digits-cnn", model_b="digits-cnn-shifted")
    assert not at.exception
    assert any(
        "cannot be compared" in e.value and "is not evaluated on dataset 'digits-test'" in e.value
        for e in at.error
    )


def test_matrix_hover_counts_flagged_images() -> None:
    from dashboard.parts.matrix import matrix_chart

    counts = np.array([[5, 2], [1, 4]])
    flagged = np.array([[0, 2], [1, 0]])
    chart = matrix_chart(counts, ["a", "b"], flagged=flagged)
    tooltip = chart.spec["layer"][0]["encoding"]["tooltip"]
    assert {"field": "flagged", "title": "suspected label errors"} in tooltip
    assert list(chart.data["flagged"]) == [0, 2, 1, 0]
    plain = matrix_chart(counts, ["a", "b"])
    assert "flagged" not in plain.data
    assert all(t["field"] != "flagged" for t in plain.spec["layer"][0]["encoding"]["tooltip"])


def test_any_cell_sorts_by_label_quality(planted: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    result = expected(planted, dataset="digits-test-planted")
    rows, probs = arrays(result), probabilities(result)
    scores = label_quality(rows.true, probs).self_confidence
    cell = (rows.true == 3) & (rows.pred == 3)  # a diagonal cell: no flags, still sortable
    order = np.flatnonzero(cell)[np.lexsort((rows.paths[cell], scores[cell]))]
    at = run(
        APP, planted, monkeypatch, cell="3,3",
        sort="label_quality_asc", page_size="12",
    )  # fmt: skip
    assert not at.exception
    assert card_paths(at) == list(rows.paths[order][:12])
