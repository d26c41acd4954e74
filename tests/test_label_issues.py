"""Planted wrong labels in a copy of the digits test set rank at the top of the suspects."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import numpy as np
import pytest

from core.analysis.label_quality import label_quality
from core.cli import _arrays, _results, main
from core.config import load_config

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "sample_models"))
from plant_labels import plant  # noqa: E402


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, tuple[str, str]]]:
    """The planted project (made here, in a temporary folder) and {path: (true, planted)}."""
    config = plant(tmp_path_factory.mktemp("planted"), "digits-test", count=8)
    with (config.parent / "planted.csv").open(encoding="utf-8") as handle:
        rows = {r["path"]: (r["label"], r["planted"]) for r in csv.DictReader(handle)}
    return config, rows


def test_planted_labels_are_the_least_likely(planted) -> None:
    config, rows = planted
    assert len(rows) == 8 and all(true != wrong for true, wrong in rows.values())
    result = _results(load_config(config), None, None)
    arrays = _arrays(result)
    quality = label_quality(arrays.true, result.probs(result.index))
    lowest = set(arrays.paths[np.argsort(quality.self_confidence)[:8]])
    assert lowest == set(rows)
    flagged = set(arrays.paths[quality.ranked_issues()])
    # cleanlab flags 7 of the 8 here: the model gives the eighth's true class 0.977, just under
    # that class's confident threshold (its mean self-confidence), so none is pruned there
    assert len(flagged & set(rows)) >= 7
    assert flagged <= set(rows)  # nothing else on this accurate model looks mislabelled
    names = arrays.classes
    for i in quality.ranked_issues():
        true, wrong = rows[arrays.paths[i]]
        assert (names[arrays.true[i]], names[quality.suggested[i]]) == (wrong, true)


def test_cli_prints_the_ranked_list(planted, capsys) -> None:
    config, rows = planted
    assert main(["label-issues", "--config", str(config), "--top", "3"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("7 of 540 images suspected of a wrong label")
    assert out[1].split() == ["path", "given", "suggested", "score"]
    assert len(out) == 2 + 3
    for line in out[2:]:
        path, given, suggested, score = line.split()
        assert rows[path] == (suggested, given)
        assert float(score) < 0.01


def test_plant_is_reproducible(tmp_path: Path) -> None:
    first = plant(tmp_path / "a", "digits-test", count=5).parent
    second = plant(tmp_path / "b", "digits-test", count=5).parent
    for name in ("labels.csv", "planted.csv"):
        assert (first / name).read_bytes() == (second / name).read_bytes()
