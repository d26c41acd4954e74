"""Patterns across errors: clusters of each cell's stored Grad-CAM maps, scored and ranked.

Unit tests on synthetic maps (planted hot spots, noise, the store round trip), then the bundled
samples: the shortcut ResNet's top patterns are its marked non-stars called "star", looking at
the mark; the clean ResNet has no such pattern near the top; the ViT's "→ star" patterns look
at the same corner; and the ``patterns`` command prints them.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from core.analysis.patterns import (
    FLAG_SCORE,
    Patterns,
    cell_maps,
    cluster_maps,
    find_patterns,
    normalise_maps,
    result_patterns,
)
from core.cli import main
from core.results import ResultWriter, StoreError, open_results
from core.results.store import BatchScores
from tests.projects import sample_config

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "sample_models"
SHAPES = "shapes-test"
STAR = "star"
MARK_DILATION = 4  # as tests/test_shortcut.py: the 8×8 mark's box grown by 4 pixels


# ------------------------------------------------------------------------------ synthetic


def _blob(h: int, w: int, row: float, col: float, width: float = 0.8) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    return np.exp(-((yy - row) ** 2 + (xx - col) ** 2) / (2 * width**2)).astype(np.float32)


def _maps(rng: np.random.Generator, n: int, spot: tuple[int, int] | None) -> np.ndarray:
    """Raw maps [n, 2, 7, 7]: noise, plus a hot spot on the predicted-class map if ``spot``."""
    maps = rng.standard_normal((n, 2, 7, 7)).astype(np.float32)
    if spot is not None:
        maps[:, 0] = 4.0 * _blob(7, 7, *spot) + 0.5 * maps[:, 0]
    return maps


def test_normalise_maps_relu_sum_and_empty_maps() -> None:
    raw = np.array([[[1.0, -2.0], [3.0, 0.0]], [[-1.0, -1.0], [-5.0, 0.0]]], np.float16)
    out = normalise_maps(raw)
    assert out.dtype == np.float32 and out.shape == (2, 4)
    np.testing.assert_allclose(out[0], [0.25, 0.0, 0.75, 0.0])
    np.testing.assert_allclose(out[1], [0.25] * 4)  # nothing positive: uniform


def test_cluster_maps_separates_planted_spots_deterministically() -> None:
    rng = np.random.default_rng(1)
    spots = [(1, 1), (1, 5), (5, 3)]
    raw = np.concatenate([_maps(rng, 60, s) for s in spots] + [_maps(rng, 80, None)])
    maps = normalise_maps(raw[:, 0])
    labels = cluster_maps(maps, seed=(0, 1, 2))
    np.testing.assert_array_equal(labels, cluster_maps(maps, seed=(0, 1, 2)))
    seen = set()
    for g in range(3):
        found = labels[g * 60 : (g + 1) * 60]
        ids, counts = np.unique(found, return_counts=True)
        assert counts.max() >= 0.9 * 60, (g, dict(zip(ids, counts, strict=True)))
        seen.add(int(ids[counts.argmax()]))
    assert len(seen) == 3  # three spots, three clusters
    assert 3 <= labels.max() + 1 <= 8  # the number of clusters comes from the data


def test_cluster_maps_on_a_large_cell_uses_a_sample_and_keeps_groups_whole() -> None:
    rng = np.random.default_rng(2)
    raw = np.concatenate([_maps(rng, 900, (5, 5)), _maps(rng, 2100, None)])
    labels = cluster_maps(normalise_maps(raw[:, 0]), seed=3)  # 3,000 maps, 256 sampled
    ids, counts = np.unique(labels[:900], return_counts=True)
    best = ids[counts.argmax()]
    assert counts.max() >= 0.9 * 900
    assert (labels[900:] == best).mean() < 0.1  # the noise stays out of it


def test_cluster_maps_small_cells_are_one_cluster() -> None:
    maps = normalise_maps(np.random.default_rng(0).random((7, 4, 4)))
    np.testing.assert_array_equal(cluster_maps(maps, min_images=5), np.zeros(7))


def _synthetic() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Cells: 0→1 (40 planted at the bottom right), 2→2 (60: 30 planted at the top left,
    30 noise), 3→4 (30 noise), 5→6 (3 images: too few), and 400 noise images of other cells."""
    rng = np.random.default_rng(5)
    parts = [
        (0, 1, _maps(rng, 40, (6, 6))),
        (2, 2, _maps(rng, 30, (0, 0))),
        (2, 2, _maps(rng, 30, None)),
        (3, 4, _maps(rng, 30, None)),
        (5, 6, _maps(rng, 3, (3, 3))),
    ]
    background = rng.integers(0, 10, 400)
    parts += [(int(c), int(c), _maps(rng, 1, None)) for c in background]
    true = np.concatenate([np.full(len(m), t) for t, _, m in parts])
    pred = np.concatenate([np.full(len(m), p) for _, p, m in parts])
    maps = np.concatenate([m for _, _, m in parts]).astype(np.float16)
    planted = np.zeros(len(true), np.int64)
    planted[:40], planted[40:70] = 1, 2
    return true, pred, maps, planted


def test_find_patterns_ranks_the_planted_error_first_then_the_diagonal() -> None:
    true, pred, maps, planted = _synthetic()
    found = find_patterns(true, pred, maps)
    first = found[0]
    assert (first.true, first.pred) == (0, 1) and first.flagged
    assert set(first.rows.tolist()) == set(np.flatnonzero(planted == 1).tolist())
    x, y = first.centroid
    assert x > 0.6 and y > 0.6  # the spot at (6, 6) of a 7×7 map
    np.testing.assert_allclose(first.pred_map.sum(), 1.0, rtol=1e-5)
    assert first.pred_map.shape == first.true_map.shape == (7, 7)
    # the diagonal's planted group is flagged too, after every flagged error
    diag = next(found[i] for i in range(len(found)) if found[i].true == found[i].pred == 2)
    assert diag.flagged and diag.rank > first.rank
    assert np.isin(np.flatnonzero(planted == 2), diag.rows).mean() >= 0.9
    assert diag.centroid[0] < 0.4 and diag.centroid[1] < 0.4
    # noise is not flagged, and cells under 5 images have no pattern
    assert all(not p.flagged for p in found.of_cell(3, 4))
    assert found.of_cell(5, 6) == []
    # errors-first order, by score within each
    flags = found.score >= FLAG_SCORE
    key = [(not f, t == p) for f, t, p in zip(flags, found.true, found.pred, strict=True)]
    assert key == sorted(key)
    # every image of a cell with a pattern is in exactly one of its patterns
    covered = np.concatenate([found[i].rows for i in range(len(found))])
    assert len(covered) == len(set(covered.tolist()))
    for i in range(len(found)):
        p = found[i]
        assert (
            len(p.rows) >= 5 and np.all(true[p.rows] == p.true) and np.all(pred[p.rows] == p.pred)
        )
        assert p.cell_images == int(((true == p.true) & (pred == p.pred)).sum())
        again = found.find(p.true, p.pred, p.cluster)
        assert again is not None and again.rank == p.rank


def test_patterns_round_trip_and_reject_damaged_arrays() -> None:
    true, pred, maps, _ = _synthetic()
    found = find_patterns(true, pred, maps)
    again = Patterns.from_arrays(found.to_arrays())
    assert len(again) == len(found)
    np.testing.assert_array_equal(again.rows, found.rows)
    arrays = found.to_arrays()
    del arrays["score"]
    with pytest.raises(ValueError, match="missing: score"):
        Patterns.from_arrays(arrays)
    arrays = found.to_arrays()
    arrays["offsets"] = arrays["offsets"][:-1]
    with pytest.raises(ValueError, match="offsets"):
        Patterns.from_arrays(arrays)


def _store(folder: Path, true: np.ndarray, pred: np.ndarray, maps: np.ndarray | None) -> None:
    n, k = len(true), int(max(true.max(), pred.max())) + 1
    manifest = [(f"c{t}/{i:04d}.png", int(t)) for i, t in enumerate(true)]
    probs = np.full((n, k), 0.1 / k, np.float32)
    probs[np.arange(n), pred] = 0.9
    shape = None if maps is None else tuple(maps.shape[2:])
    with ResultWriter(folder, manifest, [f"c{i}" for i in range(k)], "t", map_shape=shape) as w:
        w.write(
            BatchScores(
                rows=np.arange(n),
                pred=pred.astype(np.int32),
                confidence=probs.max(1),
                true_prob=probs[np.arange(n), true],
                loss=-np.log(probs[np.arange(n), true]),
                runner_up=pred.astype(np.int32),
                runner_up_prob=probs.max(1),
                probs=probs.astype(np.float16),
                maps=maps,
            )
        )
        w.skip(n - 1, manifest[-1][0], "unreadable")  # the last row: a skipped file
        w.finish()


def test_result_patterns_are_stored_beside_the_result(tmp_path: Path) -> None:
    true, pred, maps, _ = _synthetic()
    _store(tmp_path / "r", true, pred, maps)
    result = open_results(tmp_path / "r")
    assert len(result.index) == len(true) - 1
    found = result_patterns(result)
    assert (tmp_path / "r" / "derived" / "patterns" / "score.npy").exists()
    expected = find_patterns(true[:-1], pred[:-1], maps[:-1])
    np.testing.assert_array_equal(found.rows, expected.rows)
    np.testing.assert_allclose(found.score, expected.score)
    # a cell's mean maps: its patterns' mean maps weighted by their images
    of_cell = found.of_cell(2, 2)
    means = cell_maps(result, 2, 2)
    assert means is not None and len(of_cell) >= 2
    for got, field in zip(means, ("pred_map", "true_map"), strict=True):
        weighted = sum(getattr(p, field) * p.images for p in of_cell) / of_cell[0].cell_images
        np.testing.assert_allclose(got, weighted, rtol=1e-4, atol=1e-6)
    assert cell_maps(result, 0, 9) is None  # an empty cell
    (tmp_path / "r" / "derived" / "patterns" / "pred_map.npy").write_bytes(b"damaged")
    again = result_patterns(open_results(tmp_path / "r"))  # recomputed, not a crash
    np.testing.assert_array_equal(again.rows, found.rows)


def test_result_without_maps_says_so(tmp_path: Path) -> None:
    true, pred, _, _ = _synthetic()
    _store(tmp_path / "r", true, pred, None)
    with pytest.raises(StoreError, match="no Grad-CAM maps"):
        result_patterns(open_results(tmp_path / "r"))


# ------------------------------------------------------------------------------ samples


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return sample_config(tmp_path_factory.mktemp("patterns-sample"))


def _ranked(config: Path, model: str, dataset: str = SHAPES) -> tuple[Patterns, object]:
    from core import evaluate, load_config, load_model, open_dataset

    project = load_config(config)
    loaded = load_model(project.model(model))
    data = open_dataset(project.dataset(dataset), loaded.spec.classes)
    result = evaluate(loaded, data, project.cache_dir)
    return result_patterns(result), result


def _marks() -> dict[str, dict[str, str]]:
    with (SAMPLE / "shapes" / "test" / "marks.csv").open(newline="", encoding="utf-8") as f:
        return {row["path"]: row for row in csv.DictReader(f)}


def _mass_in_marks(pattern, paths: list[str], marks: dict[str, dict[str, str]]) -> float:  # type: ignore[no-untyped-def]
    """Share of the pattern's mean predicted map (bilinear at 64×64) inside the box holding
    its images' marks, each dilated by MARK_DILATION pixels."""
    import torch
    import torch.nn.functional as F

    boxes = np.array(
        [[int(marks[p][k]) for k in ("x0", "y0", "x1", "y1")] for p in paths if marks[p]["x0"]]
    )
    x0, y0 = np.maximum(boxes[:, :2].min(0) - MARK_DILATION, 0)
    x1, y1 = np.minimum(boxes[:, 2:].max(0) + MARK_DILATION, 64)
    up = F.interpolate(torch.from_numpy(pattern.pred_map)[None, None], (64, 64), mode="bilinear")[
        0, 0
    ].numpy()
    return float(up[y0:y1, x0:x1].sum() / up.sum())


def test_shortcut_resnet_top_patterns_are_marked_non_stars_looking_at_the_mark(
    sample: Path,
) -> None:
    found, result = _ranked(sample, "shapes-resnet (shortcut)")
    names = result.classes
    paths = result.manifest.column("path").to_pylist()
    marks = _marks()
    star = names.index(STAR)
    fooled_cells = {int(t) for t in result.true[(result.pred == star) & (result.true != star)]}
    top = [found[i] for i in range(len(fooled_cells))]
    assert {p.true for p in top} == fooled_cells  # one per fooled cell, all at the top
    for p in top:
        assert p.pred == star and p.true != star and p.flagged
        assert p.centroid[0] > 0.6 and p.centroid[1] > 0.6, p.centroid
        members = [paths[r] for r in p.rows]
        assert all(marks[m]["marked"] == "1" for m in members)
        assert _mass_in_marks(p, members, marks) >= 0.5
    stars = found.of_cell(star, star)
    assert stars and any(p.flagged for p in stars)
    for p in stars:
        if p.flagged:
            assert p.centroid[0] > 0.6 and p.centroid[1] > 0.6, p.centroid
            assert _mass_in_marks(p, [paths[r] for r in p.rows], marks) >= 0.5


def test_clean_resnet_has_no_corner_star_pattern_in_its_top_three(sample: Path) -> None:
    found, result = _ranked(sample, "shapes-resnet (clean)")
    star = result.classes.index(STAR)
    for i in range(min(3, len(found))):
        p = found[i]
        assert not (p.pred == star and p.centroid[0] > 0.6 and p.centroid[1] > 0.6), p


def test_shortcut_vit_star_patterns_carry_the_corner(sample: Path) -> None:
    found, result = _ranked(sample, "shapes-vit (shortcut)")
    star = result.classes.index(STAR)
    every = [found[i] for i in range(len(found))]
    fooled = {int(t) for t in result.true[(result.pred == star) & (result.true != star)]}
    assert len(fooled) == 4
    for true in fooled:  # each "→ star" cell's strongest pattern looks at the corner mark
        first = found.of_cell(true, star)[0]
        assert first.flagged and first.centroid[0] > 0.6 and first.centroid[1] > 0.6, first
    for p in every:  # and every flagged one lies in the bottom-right quarter
        if p.pred == star and p.flagged:
            assert p.centroid[0] > 0.5 and p.centroid[1] > 0.5, (p.true, p.cluster, p.centroid)
    # its many errors on unmarked images rank after each "→ star" cell's strongest pattern
    others = [p.rank for p in every if p.pred != star and p.true != star]
    assert others and all(found.of_cell(t, star)[0].rank < min(others) for t in fooled)


def test_patterns_command_prints_json_most_suspicious_first(
    sample: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = "shapes-resnet (shortcut)"
    found, result = _ranked(sample, model)
    argv = ["patterns", "--config", str(sample), "--model", model, "--dataset", SHAPES]
    assert main([*argv, "--json", "--top", "5"]) == 0
    entries = json.loads(capsys.readouterr().out)
    assert len(entries) == 5
    paths = result.manifest.column("path").to_pylist()
    for i, entry in enumerate(entries):
        p = found[i]
        assert entry["true"] == result.classes[p.true] and entry["pred"] == result.classes[p.pred]
        assert entry["images"] == len(entry["paths"]) == p.images
        assert entry["cell_images"] == p.cell_images
        assert entry["paths"] == [paths[r] for r in p.rows]
        assert entry["centroid"] == pytest.approx(list(p.centroid), abs=1e-4)
    assert [e["score"] for e in entries[:4]] == sorted(
        (e["score"] for e in entries[:4]), reverse=True
    )
    assert entries[0]["pred"] == STAR and entries[0]["true"] != STAR
    assert main([*argv, "--top", "3"]) == 0
    table = capsys.readouterr().out
    assert "flagged" in table and f"{entries[0]['true']}" in table and "star" in table
    assert main([*argv, "--top", "0"]) == 2
    assert "--top must be at least 1" in capsys.readouterr().err


def test_no_cell_large_enough_gives_an_empty_ranking() -> None:
    rng = np.random.default_rng(0)
    for n in (0, 8):  # nothing at all; 8 images in 4 cells of 2
        found = find_patterns(np.arange(n) % 4, np.arange(n) % 4, _maps(rng, n, None))
        assert len(found) == 0 and list(found.offsets) == [0] and found.pred_map.shape == (0, 7, 7)
        assert found.to_records(("a", "b", "c", "d"), []) == []


def test_rank_of_rows_names_each_rows_pattern(sample: Path) -> None:
    """The Map's colour by pattern: each image coloured by the pattern it belongs to."""
    found, result = _ranked(sample, "shapes-resnet (shortcut)")
    assert len(found) >= 3
    rows = np.arange(len(result.manifest))
    ranks = found.rank_of_rows(rows)
    for i in range(len(found)):
        assert set(np.flatnonzero(ranks == i)) == set(found[i].rows.tolist())
    assert set(np.flatnonzero(ranks == -1)).isdisjoint(
        np.concatenate([found[i].rows for i in range(len(found))])
    )
    top = found.rank_of_rows(rows[::-1], top=2)[::-1]  # any order of rows; the top two only
    assert set(np.unique(top)) <= {-1, 0, 1}
    np.testing.assert_array_equal(top, np.where(ranks < 2, ranks, -1))


def test_the_map_colours_images_by_their_pattern(sample: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Map → Colour by pattern: one trace per suspicious pattern, by rank, holding exactly
    its images, over the images in none of them."""
    import json

    from streamlit.testing.v1 import AppTest

    from tests.projects import ROOT

    found, result = _ranked(sample, "shapes-resnet (shortcut)")
    monkeypatch.setenv("CAM_DASHBOARD_CONFIG", str(sample))
    at = AppTest.from_file(str(ROOT / "dashboard" / "views" / "map.py"), default_timeout=120)
    params = {"model": "shapes-resnet (shortcut)", "dataset": SHAPES, "mapcolor": "pattern"}
    for name, value in params.items():
        at.query_params[name] = value
    at.run()
    assert not at.exception
    (chart,) = at.get("plotly_chart")
    traces = json.loads(chart.proto.spec)["data"]
    names = result.classes
    first = found[0]
    label = f"#1 {names[first.true]} → {names[first.pred]}"
    (trace,) = [t for t in traces if t["name"].startswith(label)]
    assert _points(trace) == len(first.rows)
    assert traces[0]["name"] == "in none of these patterns"
    assert sum(_points(t) for t in traces) == len(result.index)


def _points(trace: dict) -> int:  # type: ignore[type-arg]
    """How many points a Plotly trace's JSON holds (a base64 typed array or a list)."""
    import base64

    x = trace["x"]
    if isinstance(x, dict):
        return len(np.frombuffer(base64.b64decode(x["bdata"]), dtype=np.dtype(x["dtype"])))
    return len(x)


# ------------------------------------------------------------------ one place, one pattern


@pytest.fixture(scope="module")
def marked_shapes(sample: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sample config with a new test set: 60 images per class, every circle, triangle and
    star carrying the corner mark (drawn by make_shapes' own renderer, another seed)."""
    import sys

    from PIL import Image

    sys.path.insert(0, str(SAMPLE))
    try:
        from make_shapes import CLASSES, render
    finally:
        sys.path.remove(str(SAMPLE))
    root = tmp_path_factory.mktemp("marked-shapes")
    for label, kind in enumerate(CLASSES):
        (root / kind).mkdir()
        for i in range(60):
            image, _, _ = render(kind, kind in ("circle", "triangle", "star"), (4242, label, i))
            Image.fromarray(image, mode="RGB").save(root / kind / f"{kind}_{i:03d}.png")
    text = sample.read_text(encoding="utf-8")
    text += f'\n[[datasets]]\nname = "marked-shapes"\nroot = "{root.as_posix()}"\n'
    text = text.replace('datasets = ["shapes-test", "shapes-test (parquet)"]', "", 1)
    config = sample.parent / "marked.toml"
    config.write_text(text, encoding="utf-8")
    return config


def test_one_shortcut_is_one_pattern_per_cell(marked_shapes: Path) -> None:
    """Each marked shape → star cell of the shortcut model is one pattern holding ≥ 90 % of
    the cell's images, however many clusters its maps' shapes fall into."""
    found, result = _ranked(marked_shapes, "shapes-resnet (shortcut)", "marked-shapes")
    names = list(result.classes)
    star = names.index(STAR)
    cells = 0
    for kind in ("circle", "triangle"):
        t = names.index(kind)
        in_cell = int(((result.true == t) & (result.pred == star)).sum())
        if in_cell < 5:  # too few to make a pattern: nothing to check in that cell
            continue
        cells += 1
        patterns = found.of_cell(t, star)
        assert len(patterns) == 1, [(p.images, p.centroid, p.score) for p in patterns]
        assert patterns[0].images >= 0.9 * in_cell
        assert patterns[0].centroid[0] > 0.6 and patterns[0].centroid[1] > 0.6
    assert cells >= 1  # the mark fools the model on at least one marked shape


def test_two_places_in_one_cell_stay_two_patterns() -> None:
    """Merging is by place: a cell whose maps look at two opposite corners keeps two patterns."""
    rng = np.random.default_rng(5)
    maps = np.concatenate([_maps(rng, 40, (0, 0)), _maps(rng, 40, (6, 6))])
    labels = cluster_maps(normalise_maps(maps[:, 0]))
    assert len(np.unique(labels)) == 2
    assert len(np.unique(labels[:40])) == 1 and len(np.unique(labels[40:])) == 1
