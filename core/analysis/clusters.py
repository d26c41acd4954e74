"""Embedding clusters: a slice column for every result with embeddings, metadata or not.

The stored embeddings (the classifier head's input, :mod:`core.explain.embeddings`) of the
evaluated images are grouped by k-means (scikit-learn's ``MiniBatchKMeans``, seeded), in the
spirit of Spotlight's similarity clusters and Domino's slices: images the model represents
alike, which often share a source, a background or a defect nobody wrote down. Each cluster is
a categorical value, ``cluster 1`` the largest.

How many: ``k = round(sqrt(n / 2))`` (the common rule of thumb for k-means), at most
:data:`MAX_CLUSTERS` so that the Slices page stays readable and a cluster of a million-image
set still holds thousands of images, and at most ``n / MIN_SIZE`` so that a small set's
clusters hold :data:`MIN_SIZE` images on average (a slice of a handful of images says
nothing); none below two clusters. A silhouette search was not used: it costs O(n²) per
candidate k, and on embeddings without clear gaps it picks 2 or 3 clusters, too coarse to find
a slice. Up to :data:`FIT_ROWS` images k-means is fitted on all of them, past that on a seeded
sample (the centres move little; assigning a million rows then costs a matrix product).

Stored once per result in ``derived/clusters/`` (``label`` int32 [N] per manifest row, -1
where not evaluated; ``distance`` float32 [N] to the own centre; ``version``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from core.data.metadata import Column
from core.results import Results, load_derived, save_derived

__all__ = [
    "CLUSTER",
    "MAX_CLUSTERS",
    "Clusters",
    "cluster_count",
    "cluster_embeddings",
    "result_clusters",
    "stored_clusters",
]

CLUSTER = "cluster"  # the column's name
DERIVED = "clusters"
VERSION = 1
MAX_CLUSTERS = 50
MIN_SIZE = 20  # images per cluster, on average, at least
FIT_ROWS = 100_000
SEED = 0
_CHUNK = 65_536


@dataclass(frozen=True)
class Clusters:
    """Each manifest row's cluster (0 = the largest; -1 not evaluated) and its distance to
    the cluster's centre (NaN where not evaluated)."""

    label: np.ndarray  # int32 [N]
    distance: np.ndarray  # float32 [N]

    @property
    def count(self) -> int:
        return int(self.label.max()) + 1 if len(self.label) else 0

    def column(self) -> Column:
        """The clusters as a categorical column ``cluster`` (values ``cluster 1``, ...)."""
        names = tuple(f"cluster {i + 1}" for i in range(self.count))
        return Column(CLUSTER, "categorical", np.asarray(self.label, np.int32), names)

    def examples(self, cluster: int, count: int = 8) -> np.ndarray:
        """Manifest rows of ``count`` images of ``cluster`` (0-based), nearest its centre
        first: the images that show what the cluster is."""
        rows = np.flatnonzero(np.asarray(self.label) == cluster)
        order = np.argsort(np.asarray(self.distance)[rows], kind="stable")
        return rows[order[:count]]


def cluster_count(n: int) -> int:
    """k for ``n`` images (see the module); 0 when there are too few to cluster."""
    k = min(MAX_CLUSTERS, round(math.sqrt(n / 2)), n // MIN_SIZE)
    return k if k >= 2 else 0


def cluster_embeddings(vectors: Any, k: int, seed: int = SEED) -> Clusters:
    """k-means of ``vectors`` [n, D] (any float dtype, memory-mapped is fine) into ``k``
    clusters, renumbered by size (0 = the largest)."""
    from sklearn.cluster import MiniBatchKMeans

    n = len(vectors)
    rng = np.random.default_rng(seed)
    fit = np.sort(rng.choice(n, FIT_ROWS, replace=False)) if n > FIT_ROWS else np.arange(n)
    model = MiniBatchKMeans(
        n_clusters=k, random_state=seed, n_init=3, batch_size=4096, max_no_improvement=20
    )
    model.fit(np.asarray(vectors[fit], dtype=np.float32))
    label = np.empty(n, np.int32)
    distance = np.empty(n, np.float32)
    for start in range(0, n, _CHUNK):
        block = model.transform(np.asarray(vectors[start : start + _CHUNK], dtype=np.float32))
        label[start : start + len(block)] = block.argmin(1)
        distance[start : start + len(block)] = block.min(1)
    sizes = np.bincount(label, minlength=k)
    rank = np.empty(k, np.int32)
    rank[np.argsort(-sizes, kind="stable")] = np.arange(k, dtype=np.int32)
    return Clusters(rank[label], distance)


def stored_clusters(result: Results) -> Clusters | None:
    """The clusters saved beside ``result``, or None (not yet computed, or of another
    version)."""
    stored = load_derived(result, DERIVED)
    if stored is None or int(np.asarray(stored.get("version", [0]))[0]) != VERSION:
        return None
    label, distance = stored.get("label"), stored.get("distance")
    if label is None or distance is None or len(label) != len(result.manifest):
        return None
    return Clusters(label, distance)


def result_clusters(result: Results) -> Clusters | None:
    """The embedding clusters of ``result``: read from ``derived/clusters/``, else computed
    (seconds at a million images) and saved there; None without stored embeddings or with
    too few images to cluster."""
    if not result.has_embeddings:
        return None
    found = stored_clusters(result)
    if found is not None:
        return found
    index = result.index
    k = cluster_count(len(index))
    if not k:
        return None
    made = cluster_embeddings(_Rows(result.embeddings, index), k)
    label = np.full(len(result.manifest), -1, np.int32)
    distance = np.full(len(result.manifest), np.nan, np.float32)
    label[index], distance[index] = made.label, made.distance
    arrays = {"label": label, "distance": distance, "version": np.array([VERSION])}
    save_derived(result, DERIVED, arrays)
    return Clusters(label, distance)


class _Rows:
    """The evaluated rows of a memory-mapped [N, D] column, read in blocks as if it held
    only those (no copy of the whole column)."""

    def __init__(self, values: np.ndarray, index: np.ndarray) -> None:
        self.values, self.index = values, index

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, key: slice | np.ndarray) -> np.ndarray:
        return np.asarray(self.values[self.index[key]])
