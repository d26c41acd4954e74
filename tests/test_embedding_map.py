"""The 2-D map of embeddings (PCA, UMAP with a fitted sample), regions, sampling; calibration."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from core.analysis.calibration import confidence_histogram, in_bin, reliability
from core.analysis.embedding_map import (
    DENSITY_OPACITY,
    Region,
    density,
    density_png,
    drawn_sample,
    pca_layout,
    pca_project,
    result_layout,
    stored_layout,
    umap_layout,
)


def clusters(n_per: int = 100, k: int = 4, dim: int = 16, seed: int = 0):  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=10, size=(k, dim))
    labels = np.repeat(np.arange(k), n_per)
    return (centres[labels] + rng.normal(size=(len(labels), dim))).astype(np.float16), labels


def test_pca_equals_an_svd_up_to_sign() -> None:
    vectors, _ = clusters()
    x = vectors.astype(np.float64)
    centred = x - x.mean(0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    expected = centred @ vt[:3].T
    found = pca_project(vectors, 3)
    for i in range(3):
        sign = np.sign(found[:, i] @ expected[:, i])
        np.testing.assert_allclose(found[:, i], sign * expected[:, i], rtol=1e-3, atol=1e-3)
    assert pca_layout(vectors).shape == (400, 2)


def _separated(xy: np.ndarray, labels: np.ndarray) -> float:
    """Share of points whose nearest other point (in 2-D) has their label."""
    d = np.linalg.norm(xy[:, None] - xy[None], axis=2)
    np.fill_diagonal(d, np.inf)
    return float(np.mean(labels[d.argmin(1)] == labels))


def test_umap_fitted_on_a_sample_places_the_rest_with_their_cluster() -> None:
    vectors, labels = clusters(n_per=150)
    xy = umap_layout(vectors, fit_rows=300)  # 300 fitted, 300 transformed
    assert xy.shape == (600, 2) and np.isfinite(xy).all()
    assert _separated(xy, labels) > 0.95
    again = umap_layout(vectors, fit_rows=300)
    np.testing.assert_allclose(xy, again, atol=1e-4)  # seeded


def test_result_layout_is_computed_once_and_stored(tmp_path, digits_subset, digits_model) -> None:
    from core.config import DatasetSpec
    from core.data.datasets import open_dataset
    from core.results.evaluate import evaluate

    dataset = open_dataset(DatasetSpec("d", digits_subset(per_class=4)))
    result = evaluate(digits_model, dataset, out=tmp_path / "r", num_workers=0)
    assert stored_layout(result) is None
    first = result_layout(result)
    assert first.method == "umap" and first.xy.shape == (40, 2)
    assert (result.folder / "derived" / "embedding_map" / "xy.npy").is_file()
    stored = stored_layout(result)
    assert stored is not None
    np.testing.assert_array_equal(stored.xy, first.xy)


def test_box_and_lasso_regions() -> None:
    xy = np.array([[0, 0], [1, 1], [2, 2], [0.5, 1.5], [3, 0]], np.float32)
    box = Region("box", ((2.0, 2.0), (0.5, 0.5)))  # corners in any order
    assert box.contains(xy).tolist() == [False, True, True, True, False]
    triangle = Region("lasso", ((0.0, 0.0), (3.0, 0.0), (3.0, 3.0)))  # below y = x
    inside = triangle.contains(np.array([[2.0, 1.0], [1.0, 2.0], [2.5, 0.5]]))
    assert inside.tolist() == [True, False, True]
    assert Region.from_param(box.to_param()) == box
    assert Region.from_param(triangle.to_param()) == triangle
    for bad in ("", "box:1,2", "circle:1,2;3,4", "lasso:1,2;3,4", "box:a,b;c,d", "box:nan,1;2,3"):
        assert Region.from_param(bad) is None


def test_drawn_sample_keeps_every_error() -> None:
    rng = np.random.default_rng(1)
    wrong = rng.random(10_000) < 0.05
    assert len(drawn_sample(wrong, 20_000)) == 10_000
    kept = drawn_sample(wrong, 2_000)
    assert len(kept) == 2_000 and wrong[kept].sum() == wrong.sum()
    assert np.all(np.diff(kept) > 0)
    counts, xs, ys = density(rng.normal(size=(1000, 2)), bins=10)
    assert counts.shape == (10, 10) and counts.sum() == 1000 and len(xs) == len(ys) == 10


def test_drawn_sample_of_more_errors_than_the_limit_is_errors_only() -> None:
    wrong = np.random.default_rng(2).random(10_000) < 0.4
    kept = drawn_sample(wrong, 1_000)
    assert len(kept) == 1_000 and wrong[kept].all() and np.all(np.diff(kept) > 0)
    assert np.array_equal(kept, drawn_sample(wrong, 1_000))  # seeded: the same on every page


def test_density_png_is_transparent_where_empty_and_darkest_where_densest() -> None:
    counts = np.zeros((4, 5))
    counts[0, 1], counts[3, 4], counts[2, 2] = 1, 100, 10  # row 0: the lowest y
    image = np.asarray(Image.open(io.BytesIO(density_png(counts))))
    assert image.shape == (4, 5, 4) and not image[..., :3].any()  # black, shown by its alpha
    alpha = image[..., 3][::-1]  # back to rows of ascending y
    assert (alpha[counts == 0] == 0).all()
    assert alpha[3, 4] == round(255 * DENSITY_OPACITY) > alpha[2, 2] > alpha[0, 1] > 0
    assert not np.asarray(Image.open(io.BytesIO(density_png(np.zeros((3, 3))))))[..., 3].any()


def test_reliability_and_ece_by_hand() -> None:
    confidence = np.array([0.05, 0.15, 0.95, 0.95, 1.0, 0.55])
    correct = np.array([False, True, True, False, True, True])
    rel = reliability(confidence, correct, bins=10)
    t = rel.table.set_index("bin")
    assert t.loc[9, "count"] == 3 and t.loc[9, "accuracy"] == pytest.approx(2 / 3)
    assert t.loc[9, "confidence"] == pytest.approx((0.95 + 0.95 + 1.0) / 3)
    expected = (
        1 * abs(0 - 0.05) + 1 * abs(1 - 0.15) + 1 * abs(1 - 0.55) + 3 * abs(2 / 3 - 2.9 / 3)
    ) / 6
    assert rel.ece == pytest.approx(expected)
    hist = confidence_histogram(confidence, correct, bins=20)
    assert hist["right"].sum() == 4 and hist["wrong"].sum() == 2
    assert hist.loc[19, "right"] == 2 and hist.loc[19, "wrong"] == 1  # 0.95, 0.95, 1.0
    assert in_bin(confidence, 9, 10).tolist() == [False, False, True, True, True, False]
