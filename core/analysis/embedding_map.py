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
    "DENSITY_OPACITY",
    "FIT_ROWS",
    "MAX_POINTS",
    "MapLayout",
    "Region",
    "density",
    "density_png",
    "drawn_sample",
    "pca_layout",
    "pca_project",
    "quick_layout",
    "result_layout",
    "stored_layout",
    "umap_layout",
]

FIT_ROWS = 100_000  # UMAP is fitted on at most this many images; the rest are transformed
PCA_FIT_ROWS = 100_000  # the PCA axes come from at most this many images (all are projected)
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
    # the axes from at most PCA_FIT_ROWS rows (a seeded sample): at a million rows the
    # covariance would otherwise cost more than the projection itself
    rows = np.arange(n) if n <= PCA_FIT_ROWS else _sample(n, PCA_FIT_ROWS)
    total = np.zeros(d, np.float64)
    gram = np.zeros((d, d), np.float64)
    for start in range(0, len(rows), _CHUNK):
        block = np.asarray(vectors[rows[start : start + _CHUNK]], dtype=np.float32)
        total += block.sum(0, dtype=np.float64)
        gram += (block.T @ block).astype(np.float64)
    mean = total / len(rows)
    cov = gram / len(rows) - np.outer(mean, mean)
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


def _sample(n: int, k: int) -> np.ndarray:
    return np.sort(np.random.default_rng(SEED).choice(n, k, replace=False))


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


# ------------------------------------------------------------------------------ the drawn map

#: Drawn as points; past this a sample (errors first) over a density of every image. The
#: points are SVG: WebGL's start alone (two contexts, its shaders compiled on a box-select map)
#: cost a browser without a GPU more than 2,000 SVG points, and held the Map page at 1.19-1.26×
#: a bare page's load with 10,000 points, against 1.05-1.12× now (bench/embeddings.py).
MAX_POINTS = 2_000
DENSITY_OPACITY = 0.5  # of the densest cell of the density drawn under a sample


@dataclass(frozen=True)
class Region:
    """A box or lasso drawn on the map, in map coordinates; lives in the URL as text."""

    kind: str  # "box" or "lasso"
    points: tuple[tuple[float, float], ...]  # box: two corners; lasso: the polygon's vertices

    def to_param(self) -> str:
        """``box:x0,y0;x1,y1`` or ``lasso:x,y;x,y;...`` (coordinates to 4 significant digits
        past the point's scale, so a long lasso still fits in a URL)."""
        return f"{self.kind}:" + ";".join(f"{x:.5g},{y:.5g}" for x, y in self.points)

    @classmethod
    def from_param(cls, text: str | None) -> Region | None:
        """Inverse of :meth:`to_param`; None for anything malformed."""
        if not text or ":" not in text:
            return None
        kind, _, body = text.partition(":")
        try:
            points = tuple(
                (float(x), float(y)) for x, y in (pair.split(",") for pair in body.split(";"))
            )
        except ValueError:
            return None
        if not all(np.isfinite(points).ravel()):
            return None
        if (kind == "box" and len(points) == 2) or (kind == "lasso" and 3 <= len(points) <= 2000):
            return cls(kind, points)
        return None

    def contains(self, xy: np.ndarray) -> np.ndarray:
        """Bool mask [N] of the points ``xy`` [N, 2] inside the region (edges included for a
        box; even-odd rule for a lasso, as Plotly selects)."""
        x, y = xy[:, 0].astype(np.float64), xy[:, 1].astype(np.float64)
        if self.kind == "box":
            (x0, y0), (x1, y1) = self.points
            return (x >= min(x0, x1)) & (x <= max(x0, x1)) & (y >= min(y0, y1)) & (y <= max(y0, y1))
        poly = np.asarray(self.points, dtype=np.float64)
        inside = np.zeros(len(xy), dtype=bool)
        for (ax, ay), (bx, by) in zip(poly, np.roll(poly, -1, axis=0), strict=True):
            crosses = (ay > y) != (by > y)
            with np.errstate(divide="ignore", invalid="ignore"):
                at = ax + (y - ay) * (bx - ax) / (by - ay)
            inside ^= crosses & (x < at)
        return inside


def drawn_sample(wrong: np.ndarray, limit: int = MAX_POINTS, seed: int = SEED) -> np.ndarray:
    """Positions of the points drawn individually, ascending: all of them up to ``limit``;
    past it errors first (``wrong`` is a bool mask), then a seeded random sample of the right
    ones; where the errors alone are over ``limit``, a seeded sample of ``limit`` errors."""
    n = len(wrong)
    if n <= limit:
        return np.arange(n)
    rng = np.random.default_rng(seed)
    errors = np.flatnonzero(wrong)
    if len(errors) >= limit:
        return np.sort(rng.choice(errors, limit, replace=False))
    right = np.flatnonzero(~wrong)
    take = limit - len(errors)
    return np.sort(np.concatenate([errors, rng.choice(right, take, replace=False)]))


def density(xy: np.ndarray, bins: int = 200) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Counts [bins, bins] (rows: y) of ``xy`` on a regular grid, and the x and y bin centres."""
    if not len(xy):
        return np.zeros((bins, bins)), np.zeros(bins), np.zeros(bins)
    counts, xe, ye = np.histogram2d(xy[:, 0], xy[:, 1], bins=bins)
    return counts.T, (xe[:-1] + xe[1:]) / 2, (ye[:-1] + ye[1:]) / 2


def density_png(counts: np.ndarray) -> bytes:
    """A density's ``counts`` [rows: y ascending] as a PNG image, top row the highest y: black,
    transparent where a cell is empty and more opaque with ``log(1 + count)``, up to
    :data:`DENSITY_OPACITY` in the densest cell. A browser draws it as one picture, where a
    heatmap of the same cells took it 0.1 s longer (bench/embeddings.py)."""
    import io

    from PIL import Image

    level = np.log1p(np.asarray(counts, dtype=np.float64))
    top = float(level.max()) if level.size else 0.0
    rgba = np.zeros((*level.shape, 4), dtype=np.uint8)
    if top > 0:
        rgba[..., 3] = np.round(level[::-1] / top * 255 * DENSITY_OPACITY).astype(np.uint8)
    out = io.BytesIO()
    Image.fromarray(rgba, "RGBA").save(out, "PNG")
    return out.getvalue()
