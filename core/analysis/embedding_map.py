"""A 2-D map of a result's embeddings: PCA at once, UMAP computed once and stored beside it.

:func:`pca_layout` takes about a second at a million rows (a 128 × 128 covariance, chunked), so
a page can always draw something. :func:`result_layout` is the UMAP layout (umap-learn, seeded),
computed once per result and saved as ``derived/embedding_map``; callers run it in the
background and show the PCA meanwhile. The embeddings are first reduced to
:data:`UMAP_INPUT_DIM` dimensions by the same PCA (UMAP's memory and time grow with the input
width, umap#890). Up to :data:`FIT_ROWS` images UMAP is fitted on all of them; past that on a
seeded random sample of that many, and the rest are placed by ``transform`` in blocks.

umap-learn (with numba and pynndescent) is imported only by :func:`umap_layout`; its first use
in a process compiles numba code (tens of seconds).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from core.results import Results, load_derived, save_derived

__all__ = [
    "FIT_ROWS",
    "MapLayout",
    "pca_layout",
    "pca_project",
    "quick_layout",
    "result_layout",
    "stored_layout",
    "umap_layout",
]

FIT_ROWS = 100_000  # UMAP is fitted on at most this many images; the rest are transformed
UMAP_INPUT_DIM = 32
TRANSFORM_BLOCK = 50_000
SEED = 0
_CHUNK = 131_072

Progress = Callable[[str, float], None]
"""Called as ``progress(stage, fraction_done)``."""


@dataclass(frozen=True)
class MapLayout:
    """Coordinates of every evaluated image (aligned with ``Results.index``) and how they were
    made: "umap" or "pca"."""

    xy: np.ndarray  # float32 [n, 2]
    method: str


def pca_project(vectors: np.ndarray, dims: int) -> np.ndarray:
    """``vectors`` [N, D] (any float dtype, memory-mapped is fine) on their ``dims`` principal
    axes, float32 [N, dims]; signs fixed so that the result does not depend on the LAPACK."""
    n, d = vectors.shape
    dims = min(dims, d)
    if n == 0:
        return np.zeros((0, dims), np.float32)
    total = np.zeros(d, np.float64)
    gram = np.zeros((d, d), np.float64)
    for start in range(0, n, _CHUNK):
        block = np.asarray(vectors[start : start + _CHUNK], dtype=np.float32)
        total += block.sum(0, dtype=np.float64)
        gram += (block.T @ block).astype(np.float64)
    mean = total / n
    cov = gram / n - np.outer(mean, mean)
    values, axes = np.linalg.eigh(cov)
    axes = axes[:, np.argsort(values)[::-1][:dims]]
    axes *= np.where(axes[np.abs(axes).argmax(0), np.arange(dims)] < 0, -1.0, 1.0)
    out = np.empty((n, dims), np.float32)
    proj = axes.astype(np.float32)
    shift = (mean @ axes).astype(np.float32)
    for start in range(0, n, _CHUNK):
        block = np.asarray(vectors[start : start + _CHUNK], dtype=np.float32)
        out[start : start + len(block)] = block @ proj - shift
    return out


def pca_layout(vectors: np.ndarray) -> np.ndarray:
    """The first two principal components, float32 [N, 2]."""
    xy = pca_project(vectors, 2)
    if xy.shape[1] < 2:
        xy = np.pad(xy, ((0, 0), (0, 2 - xy.shape[1])))
    return xy


def umap_layout(
    vectors: np.ndarray,
    fit_rows: int = FIT_ROWS,
    seed: int = SEED,
    progress: Progress | None = None,
) -> np.ndarray:
    """A seeded UMAP layout, float32 [N, 2]; fitted on at most ``fit_rows`` rows (a seeded
    random sample), the others placed by ``transform``."""
    n = len(vectors)
    if n < 4:  # UMAP needs a few neighbours; a handful of points is shown as PCA
        return pca_layout(vectors)
    import umap

    reduced = pca_project(vectors, UMAP_INPUT_DIM)
    rng = np.random.default_rng(seed)
    fit = np.sort(rng.choice(n, fit_rows, replace=False)) if n > fit_rows else np.arange(n)
    if progress is not None:
        progress("fitting", 0.0)
    reducer = umap.UMAP(n_components=2, n_neighbors=min(15, n - 1), random_state=seed, n_jobs=1)
    xy = np.empty((n, 2), np.float32)
    xy[fit] = reducer.fit_transform(reduced[fit])
    rest = np.setdiff1d(np.arange(n), fit, assume_unique=True)
    for start in range(0, len(rest), TRANSFORM_BLOCK):
        if progress is not None:
            progress("placing the rest", start / len(rest))
        rows = rest[start : start + TRANSFORM_BLOCK]
        xy[rows] = reducer.transform(reduced[rows])
    if progress is not None:
        progress("done", 1.0)
    return xy


def stored_layout(result: Results) -> MapLayout | None:
    """The UMAP layout saved beside ``result``, or None if it was not computed yet."""
    stored = load_derived(result, "embedding_map")
    if stored is None or "xy" not in stored or stored["xy"].shape != (len(result.index), 2):
        return None
    return MapLayout(np.asarray(stored["xy"]), "umap")


def quick_layout(result: Results) -> MapLayout:
    """The PCA layout of ``result``'s evaluated images (about a second at a million)."""
    return MapLayout(pca_layout(_evaluated(result)), "pca")


def result_layout(result: Results, progress: Progress | None = None) -> MapLayout:
    """The UMAP layout of ``result``: read from ``derived/embedding_map``, else computed (the
    first time: seconds to minutes) and saved there."""
    stored = stored_layout(result)
    if stored is not None:
        return stored
    xy = umap_layout(_evaluated(result), progress=progress)
    save_derived(result, "embedding_map", {"xy": xy})
    return MapLayout(xy, "umap")


def _evaluated(result: Results) -> np.ndarray:
    vectors = result.embeddings  # raises StoreError if none were stored
    if len(result.index) == len(vectors):
        return vectors
    return np.asarray(vectors[result.index])
