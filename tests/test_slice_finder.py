"""The automatic slice finder and the embedding clusters it searches."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import binomtest, fisher_exact

from core.analysis.clusters import cluster_count, cluster_embeddings
from core.analysis.slice_finder import (
    ALPHA,
    FoundSlices,
    find_slices,
    result_slices,
    stored_slices,
)
from core.analysis.slices import Slice
from core.data.metadata import Column, ColumnSet

REPO = Path(__file__).resolve().parents[1]


def planted(n: int = 20_000, seed: int = 0) -> tuple[ColumnSet, np.ndarray, np.ndarray, Slice]:
    """Ten columns of noise, one numeric, and a planted slice site=D ∧ scanner=S2 (1 % of the
    rows) with five times the error rate of the rest."""
    rng = np.random.default_rng(seed)
    columns = [
        Column(f"meta{i}", "categorical", rng.integers(0, 5, n).astype(np.int32), tuple("abcde"))
        for i in range(8)
    ]
    site = rng.integers(0, 4, n).astype(np.int32)
    scanner = rng.integers(0, 4, n).astype(np.int32)
    inside = (site == 3) & (scanner == 1)
    drop = np.flatnonzero(inside)[int(0.01 * n) :]  # exactly 1 % of the rows planted
    site[drop] = rng.integers(0, 3, len(drop))
    inside = (site == 3) & (scanner == 1)
    columns += [
        Column("site", "categorical", site, ("A", "B", "C", "D")),
        Column("scanner", "categorical", scanner, ("S1", "S2", "S3", "S4")),
        Column("brightness", "numeric", rng.random(n)),
    ]
    true = rng.integers(0, 10, n)
    wrong = rng.random(n) < np.where(inside, 0.5, 0.1)
    pred = np.where(wrong, (true + 1) % 10, true)
    return ColumnSet(columns), true, pred, Slice.parse("site:D;scanner:S2")


def test_the_planted_slice_is_in_the_top_three() -> None:
    columns, true, pred, plant = planted()
    found = find_slices(columns, true, pred)
    params = [s.slice.to_param() for s in found.slices]
    assert plant.to_param() in params[:3], params[:5]
    best = found.slices[params.index(plant.to_param())]
    mask = plant.mask(columns)
    assert best.images == mask.sum() == 200
    assert best.errors == (true != pred)[mask].sum()


def test_found_numbers_are_exact_on_all_rows() -> None:
    columns, true, pred, _ = planted(8_000, seed=1)
    errors = true != pred
    found = find_slices(columns, true, pred, top=10)
    assert len(found)
    for entry in found.slices:
        mask = entry.slice.mask(columns)
        assert entry.images == mask.sum() and entry.errors == errors[mask].sum()
        table = [
            [entry.errors, entry.images - entry.errors],
            [errors[~mask].sum(), (~mask).sum() - errors[~mask].sum()],
        ]
        assert entry.p_value == pytest.approx(fisher_exact(table, "greater").pvalue, rel=1e-9)
        ci = binomtest(entry.images - entry.errors, entry.images).proportion_ci(0.95, "wilson")
        assert entry.ci == pytest.approx((ci.low, ci.high), abs=1e-12)
        rate, share = errors[mask].mean() / errors.mean(), len(mask) / mask.sum()
        assert entry.score == pytest.approx(ALPHA * (rate - 1) - (1 - ALPHA) * (share - 1))
    scores = [s.score for s in found.slices]
    assert scores == sorted(scores, reverse=True)
    masks = {np.packbits(s.slice.mask(columns)).tobytes() for s in found.slices}
    assert len(masks) == len(found)  # no two entries with the same images


def test_the_counting_evaluation_equals_sliceline_s_own() -> None:
    """The bincount replacement of Slicefinder._eval_slice gives sliceline's statistics."""
    import warnings

    from sliceline import Slicefinder

    from core.analysis.slice_finder import _slicefinder

    rng = np.random.default_rng(4)
    x = rng.integers(0, 4, (3_000, 5)).astype(np.float64)
    errors = (rng.random(3_000) < np.where((x[:, 0] == 1) & (x[:, 2] == 3), 0.6, 0.1)) * 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plain = Slicefinder(alpha=0.95, k=10, max_l=3, min_sup=10, verbose=False).fit(x, errors)
    ours = _slicefinder(0.95, 10, 3, 10).fit(x, errors)
    np.testing.assert_array_equal(
        np.array(ours.top_slices_, dtype=float), np.array(plain.top_slices_, dtype=float)
    )
    for a, b in zip(ours.top_slices_statistics_, plain.top_slices_statistics_, strict=True):
        assert a == pytest.approx(b)


def test_nothing_to_find() -> None:
    columns, true, _, _ = planted(1_000)
    assert len(find_slices(columns, true, true)) == 0  # no errors
    assert len(find_slices(ColumnSet(rows=len(true)), true, (true + 1) % 10)) == 0


def test_clusters_are_seeded_sized_and_ordered() -> None:
    assert cluster_count(30) == 0
    assert cluster_count(400) == 14  # round(sqrt(200)), 20 images each at least
    assert cluster_count(10**6) == 50
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 10, (4, 16))
    sizes = [300, 200, 120, 80]
    blobs = [c + rng.normal(0, 1, (s, 16)) for c, s in zip(centres, sizes, strict=True)]
    vectors = np.concatenate(blobs)
    made = cluster_embeddings(vectors.astype(np.float16), 4)
    again = cluster_embeddings(vectors.astype(np.float16), 4)
    np.testing.assert_array_equal(made.label, again.label)
    assert np.bincount(made.label).tolist() == sizes  # the groups, largest first
    examples = made.examples(0, 5)
    assert (made.label[examples] == 0).all()
    assert made.distance[examples].max() <= np.sort(made.distance[made.label == 0])[4]
    assert made.column().categories == ("cluster 1", "cluster 2", "cluster 3", "cluster 4")


def test_on_the_shapes_sample_the_finder_names_the_marked_site(
    tmp_path: Path, sample_config
) -> None:
    """Every marked image came from site B; the shortcut model calls marked shapes stars."""
    from core.analysis import slice_finder
    from core.analysis.slice_columns import result_columns
    from core.data.datasets import open_dataset
    from core.data.models import load_model
    from core.results.evaluate import evaluate

    spec = sample_config.model("shapes-resnet (shortcut)")
    dataset = open_dataset(sample_config.dataset("shapes-test"), spec.classes)
    result = evaluate(load_model(spec), dataset, out=tmp_path / "result", num_workers=0)
    columns = result_columns(result, dataset)
    assert {"site", "scanner", "captured", "brightness", "cluster", "class"} <= set(columns.names)
    found = result_slices(result, columns)
    top = found.slices[0]
    assert top.slice.to_json(columns).get("site") == "B", found.to_records(columns, 3)
    assert top.p_value < 1e-6 and top.ci[1] < (result.true == result.pred).mean()
    assert (result.folder / "derived" / "slices" / "version.npy").exists()

    def never(*args: object, **kwargs: object) -> FoundSlices:
        raise AssertionError("searched again")

    original = slice_finder.find_slices
    slice_finder.find_slices = never  # type: ignore[assignment]
    try:
        again = result_slices(result, result_columns(result, dataset))
    finally:
        slice_finder.find_slices = original
    assert again == found
    other = ColumnSet(list(columns), columns.rows, source="edited metadata")
    assert stored_slices(result, other) is None  # found on other columns: found again, saved
    assert result_slices(result, other) == found
    assert stored_slices(result, other) == found and stored_slices(result, columns) is None
    shutil.rmtree(tmp_path / "result")
