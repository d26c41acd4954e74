"""Patterns across errors: groups of images of one cell whose Grad-CAM maps agree on one place.

SpRAy-style (Lapuschkin et al. 2019), on the maps stored with the predictions (float16, at the
target layer's resolution), with no model call:

1. Each image's predicted-class map is made a distribution over the map's pixels (ReLU, divided
   by its sum; an all-zero map is uniform).
2. Per cell (true, predicted) with at least ``min_images`` images, the maps are clustered by
   spectral clustering: Hellinger distances (Euclidean distance of the maps' square roots), a
   symmetric k-nearest-neighbour graph with self-tuning widths (Zelnik-Manor & Perona), the
   normalised Laplacian's eigengap choosing the number of clusters (1 to ``max_clusters``) and
   a deterministic QR discretisation (Damle et al., scikit-learn's ``cluster_qr``). A cell of
   more than ``landmarks`` images is clustered on a seeded sample of that many. Then three
   k-means steps: every map joins the cluster whose mean is nearest (this places the maps left
   out of the sample, and takes back the noisy maps that a k-nearest-neighbour graph ties to
   tight groups). Clusters under ``min_images`` join the nearest larger one. Finally, clusters
   of the cell that look at **the same place** are one pattern: two clusters whose hot regions
   (step 3), each grown by one map cell (a cell of the target layer is the smallest place a
   map can name), overlap with IoU ≥ ``MERGE_IOU`` are merged (transitively). One shortcut is
   then one pattern however its maps' shapes vary; two different places stay two patterns.
3. Each cluster's *hot region* is the smallest set of pixels holding half of its mean map's mass.
   An image *looks there* when its own map puts at least half the cluster's mean share there.
   The **score** is how unlikely it is that ``k`` of the cell's ``n`` images look there if they
   looked like images predicted as other classes (a seeded sample of them, the same for every
   cluster): with ``q`` the share of those that look there, score = -log10 of the Chernoff
   bound ``exp(-n·KL(k/n ‖ q))`` on that binomial tail. The baseline leaves out the cell's
   predicted class: a shortcut the whole class uses (every "star" looks at the corner mark)
   would otherwise be its own baseline and hide itself.

The ranked list puts flagged patterns (score ≥ ``FLAG_SCORE``) of errors first, then flagged
patterns of correct predictions ("right for a possibly wrong reason"), then the rest; by score
within each. :func:`result_patterns` computes it once and stores it beside the result
(``derived/patterns``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

from core.results import Results, StoreError, load_derived, save_derived

__all__ = [
    "FLAG_SCORE",
    "Pattern",
    "Patterns",
    "cell_maps",
    "cluster_maps",
    "find_patterns",
    "normalise_maps",
    "result_patterns",
]

FLAG_SCORE = 3.0  # a pattern at least this unlikely by chance (p ≤ 0.001) is flagged
DERIVED = "patterns"
MERGE_IOU = 0.5  # clusters of a cell whose hot regions overlap at least this much are merged
VERSION = 2  # stored with the patterns: a change of method recomputes them
_CHUNK_ROWS = 65_536
_HOT_MASS = 0.5  # the hot region holds this share of the cluster's mean map
_LOOKS_THERE = 0.5  # an image looks there with at least this share of the cluster's mean share
_BASELINE_IMAGES = 20_000
_KNN = 10
_SCALE_NEIGHBOUR = 7  # self-tuning width: distance to this neighbour
_REFINE_STEPS = 3  # after the spectral split, maps move to the nearest cluster mean


@dataclass(frozen=True)
class Pattern:
    """One pattern: a cluster of a cell's images whose predicted-class maps agree."""

    rank: int  # 0 = most suspicious
    true: int
    pred: int
    cluster: int  # 1-based number of the pattern within its cell (by score)
    clusters_in_cell: int
    rows: np.ndarray  # int64 manifest rows of its images, the most typical (nearest the mean) first
    cell_images: int
    score: float
    looking: int  # images of the cell that look at its hot region (k of the score)
    baseline: float  # share of baseline images that look there (q of the score)
    centroid: tuple[float, float]  # (x, y) of the mean predicted-class map, fractions, top left 0
    spread: float  # root mean squared distance from the centroid, in fractions of the side
    pred_map: np.ndarray  # float32 [h, w] mean predicted-class map (sums to 1)
    true_map: np.ndarray  # float32 [h, w] mean true-class (runner-up on the diagonal) map

    @property
    def images(self) -> int:
        return len(self.rows)

    @property
    def flagged(self) -> bool:
        return self.score >= FLAG_SCORE

    @property
    def diagonal(self) -> bool:
        return self.true == self.pred


@dataclass(frozen=True)
class Patterns:
    """Every pattern of a result, most suspicious first (columnar; see :class:`Pattern`)."""

    true: np.ndarray  # int32 [P]
    pred: np.ndarray  # int32 [P]
    cluster: np.ndarray  # int32 [P] 1-based within its cell
    clusters_in_cell: np.ndarray  # int32 [P]
    cell_images: np.ndarray  # int64 [P]
    score: np.ndarray  # float32 [P]
    looking: np.ndarray  # int64 [P]
    baseline: np.ndarray  # float32 [P]
    centroid: np.ndarray  # float32 [P, 2] (x, y)
    spread: np.ndarray  # float32 [P]
    pred_map: np.ndarray  # float32 [P, h, w]
    true_map: np.ndarray  # float32 [P, h, w]
    offsets: np.ndarray  # int64 [P + 1]: pattern i's images are rows[offsets[i]:offsets[i+1]]
    rows: np.ndarray  # int64 manifest rows, pattern by pattern
    version: np.ndarray = field(default_factory=lambda: np.array([VERSION]))  # method version

    def __len__(self) -> int:
        return len(self.true)

    def __getitem__(self, i: int) -> Pattern:
        if not -len(self) <= i < len(self):
            raise IndexError(f"pattern {i} of {len(self)}")
        i %= len(self)
        x, y = (float(v) for v in self.centroid[i])
        return Pattern(
            rank=i,
            true=int(self.true[i]),
            pred=int(self.pred[i]),
            cluster=int(self.cluster[i]),
            clusters_in_cell=int(self.clusters_in_cell[i]),
            rows=np.asarray(self.rows[self.offsets[i] : self.offsets[i + 1]]),
            cell_images=int(self.cell_images[i]),
            score=float(self.score[i]),
            looking=int(self.looking[i]),
            baseline=float(self.baseline[i]),
            centroid=(x, y),
            spread=float(self.spread[i]),
            pred_map=np.asarray(self.pred_map[i]),
            true_map=np.asarray(self.true_map[i]),
        )

    def rank_of_rows(self, rows: np.ndarray, top: int | None = None) -> np.ndarray:
        """int32 [len(rows)]: the rank of the pattern each manifest row belongs to (among the
        ``top`` most suspicious, all by default), -1 for rows in none of them."""
        count = len(self) if top is None else min(top, len(self))
        members = np.asarray(self.rows[: self.offsets[count]], dtype=np.int64)
        wanted = np.asarray(rows, dtype=np.int64)
        lookup = np.full(max(members.max(initial=-1), wanted.max(initial=-1)) + 1, -1, np.int32)
        lookup[members] = np.repeat(np.arange(count), np.diff(self.offsets[: count + 1]))
        return lookup[wanted]

    def of_cell(self, true: int, pred: int) -> list[Pattern]:
        """The patterns of one cell, by their number in the cell."""
        found = np.flatnonzero((self.true == true) & (self.pred == pred))
        return sorted((self[int(i)] for i in found), key=lambda p: p.cluster)

    def find(self, true: int, pred: int, cluster: int) -> Pattern | None:
        """Pattern ``cluster`` (1-based) of cell (``true``, ``pred``), or None."""
        hit = np.flatnonzero((self.true == true) & (self.pred == pred) & (self.cluster == cluster))
        return self[int(hit[0])] if len(hit) else None

    def to_arrays(self) -> dict[str, np.ndarray]:
        """The arrays by field name (each saved as a ``.npy`` file)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray]) -> Patterns:
        """Inverse of :meth:`to_arrays`; raises ValueError for missing or inconsistent arrays."""
        names = [f.name for f in fields(cls)]
        missing = [n for n in names if n not in arrays]
        if missing:
            raise ValueError(f"pattern arrays missing: {', '.join(missing)}")
        found = cls(**{n: np.asarray(arrays[n]) for n in names})
        p = len(found.true)
        if any(
            len(getattr(found, n)) != p for n in names if n not in ("offsets", "rows", "version")
        ):
            raise ValueError("pattern arrays differ in length")
        if len(found.offsets) != p + 1 or int(found.offsets[-1]) != len(found.rows):
            raise ValueError("pattern offsets do not match their rows")
        return found

    def to_records(
        self, classes: tuple[str, ...], paths: Any, top: int | None = None
    ) -> list[dict[str, Any]]:
        """JSON-ready entries, most suspicious first (``paths``: manifest path of each row)."""
        out = []
        for i in range(len(self) if top is None else min(top, len(self))):
            p = self[i]
            out.append(
                {
                    "rank": i + 1,
                    "true": classes[p.true],
                    "pred": classes[p.pred],
                    "pattern": p.cluster,
                    "patterns_in_cell": p.clusters_in_cell,
                    "images": p.images,
                    "cell_images": p.cell_images,
                    "score": round(p.score, 3),
                    "flagged": p.flagged,
                    "looking": p.looking,
                    "baseline": round(p.baseline, 5),
                    "centroid": [round(p.centroid[0], 4), round(p.centroid[1], 4)],
                    "spread": round(p.spread, 4),
                    "paths": [str(paths[int(r)]) for r in p.rows],
                }
            )
        return out


# ------------------------------------------------------------------------------- maps


def normalise_maps(raw: np.ndarray) -> np.ndarray:
    """Raw maps [n, h, w] (any float dtype) -> float32 [n, h*w] distributions: ReLU, divided by
    the sum; an all-zero (or non-finite) map becomes uniform."""
    flat = np.asarray(raw, dtype=np.float32).reshape(len(raw), -1)
    flat = np.nan_to_num(flat, nan=0.0, posinf=0.0, neginf=0.0)
    np.maximum(flat, 0.0, out=flat)
    total = flat.sum(axis=1, keepdims=True)
    empty = (total <= 0)[:, 0]
    np.divide(flat, np.where(total > 0, total, 1.0), out=flat)
    flat[empty] = 1.0 / flat.shape[1]
    return flat


def _read_normalised(maps: np.ndarray, channel: int, chunk_rows: int = _CHUNK_ROWS) -> np.ndarray:
    """Channel ``channel`` of stored maps [N, 2, h, w] as normalised float32 [N, h*w], chunked."""
    n, _, h, w = maps.shape
    out = np.empty((n, h * w), np.float32)
    for start in range(0, n, chunk_rows):
        stop = min(start + chunk_rows, n)
        out[start:stop] = normalise_maps(maps[start:stop, channel])
    return out


# ------------------------------------------------------------------------------- clustering


def cluster_maps(
    maps: np.ndarray,
    seed: int | tuple[int, ...] = 0,
    min_images: int = 5,
    max_clusters: int = 8,
    landmarks: int = 256,
    shape: tuple[int, int] | None = None,
) -> np.ndarray:
    """Cluster labels (0..k-1, largest cluster first) of normalised maps [n, d] (see module doc).

    Deterministic for a given ``seed``. Fewer than ``2 * min_images`` maps form one cluster.
    ``shape`` is the maps' (h, w) (default: square), for the same-place merge.
    """
    n = len(maps)
    if n < 2 * min_images:
        return np.zeros(n, np.int64)
    feats = np.sqrt(np.maximum(maps, 0.0)).astype(np.float32)  # Hellinger: Euclidean on √p
    rng = np.random.default_rng(seed)
    sample = np.sort(rng.permutation(n)[:landmarks]) if n > landmarks else np.arange(n)
    lab = _spectral(feats[sample], max_clusters)
    members = feats[sample]
    for _ in range(_REFINE_STEPS):  # every map joins the cluster whose mean is nearest
        groups = np.unique(lab)
        if len(groups) < 2:
            break
        centres = np.stack([members[lab == g].mean(0) for g in groups])
        lab, members = groups[_nearest(feats, centres)], feats
    if len(lab) != n:  # one cluster among the sampled maps: all of them
        lab = np.zeros(n, np.int64)
    return _merge_same_place(maps, _merge_small(feats, lab, min_images), shape)


def _merge_same_place(
    maps: np.ndarray, labels: np.ndarray, shape: tuple[int, int] | None = None
) -> np.ndarray:
    """Merge clusters whose hot regions, grown by one map cell, overlap with IoU ≥
    ``MERGE_IOU`` (union-find over the pairs, so A~B and B~C makes one); relabel by size."""
    groups = int(labels.max()) + 1 if len(labels) else 0
    if groups < 2:
        return labels
    sizes = np.bincount(labels, minlength=groups)
    sums = np.zeros((groups, maps.shape[1]), np.float64)
    _bincount_sums(sums, np.asarray(maps, np.float32), labels)
    hot = _hot_regions((sums / sizes[:, None]).astype(np.float32))
    hot = _grown(hot, shape or _square(maps.shape[1])).astype(np.float32)
    inter = hot @ hot.T
    area = hot.sum(1)
    iou = inter / np.maximum(area[:, None] + area[None, :] - inter, 1.0)
    parent = np.arange(groups)
    for a, b in zip(*np.nonzero(np.triu(iou >= MERGE_IOU, k=1)), strict=True):
        ra, rb = _root(parent, int(a)), _root(parent, int(b))
        parent[max(ra, rb)] = min(ra, rb)
    roots = np.array([_root(parent, g) for g in range(groups)])
    if len(np.unique(roots)) == groups:
        return labels
    merged = roots[labels]
    ids, inverse, counts = np.unique(merged, return_inverse=True, return_counts=True)
    order = np.lexsort((ids, -counts))
    rank = np.empty(len(ids), np.int64)
    rank[order] = np.arange(len(ids))
    return rank[inverse.ravel()]


def _square(d: int) -> tuple[int, int]:
    side = round(d**0.5)
    return (side, d // side) if side * (d // side) == d else (1, d)


def _grown(masks: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Boolean masks [g, h*w] grown by one cell in each of the 8 directions."""
    h, w = shape
    padded = np.pad(masks.reshape(-1, h, w), ((0, 0), (1, 1), (1, 1)))
    out = np.zeros((len(masks), h, w), bool)
    for dy in range(3):
        for dx in range(3):
            out |= padded[:, dy : dy + h, dx : dx + w]
    return out.reshape(len(masks), -1)


def _root(parent: np.ndarray, g: int) -> int:
    while parent[g] != g:
        g = int(parent[g])
    return g


def _sq_dists(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    d = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * (a @ b.T)
    return np.maximum(d, 0.0)


def _nearest(points: np.ndarray, refs: np.ndarray, chunk: int = 8192) -> np.ndarray:
    out = np.empty(len(points), np.int64)
    ref_sq = (refs * refs).sum(1)
    for start in range(0, len(points), chunk):
        block = points[start : start + chunk]
        out[start : start + chunk] = (ref_sq[None, :] - 2.0 * (block @ refs.T)).argmin(1)
    return out


def _spectral(feats: np.ndarray, max_clusters: int) -> np.ndarray:
    """Spectral clustering of a few hundred points: kNN graph, eigengap, QR discretisation."""
    import scipy.linalg

    m = len(feats)
    d2 = _sq_dists(feats, feats)
    np.fill_diagonal(d2, np.inf)
    knn = min(_KNN, m - 1)
    near = np.argpartition(d2, knn - 1, axis=1)[:, :knn]
    near_d = np.take_along_axis(d2, near, axis=1)
    scale_k = min(_SCALE_NEIGHBOUR, knn) - 1
    sigma = np.sqrt(np.partition(near_d, scale_k, axis=1)[:, scale_k]) + 1e-6
    adj = np.zeros((m, m), bool)
    adj[np.repeat(np.arange(m), knn), near.ravel()] = True
    adj |= adj.T
    np.fill_diagonal(d2, 0.0)
    weights = np.where(adj, np.exp(-d2 / (sigma[:, None] * sigma[None, :])), 0.0)
    degree = weights.sum(1) + 1e-12
    inv = 1.0 / np.sqrt(degree)
    affinity = (weights * inv[:, None] * inv[None, :]).astype(np.float64)
    top = min(max_clusters + 1, m)
    values, vectors = scipy.linalg.eigh(affinity, subset_by_index=[m - top, m - 1], driver="evr")
    values, vectors = values[::-1], vectors[:, ::-1]  # largest first: Laplacian's smallest
    gaps = values[:-1] - values[1:]  # eigengap of the normalised Laplacian 1 - values
    k = int(np.argmax(gaps[:max_clusters])) + 1
    if k == 1:
        return np.zeros(m, np.int64)
    return _cluster_qr(vectors[:, :k])


def _cluster_qr(vectors: np.ndarray) -> np.ndarray:
    """Damle, Minden & Ying's QR discretisation of a spectral embedding (no random start)."""
    import scipy.linalg

    k = vectors.shape[1]
    _, _, piv = scipy.linalg.qr(vectors.T, pivoting=True)
    ut, _, v = np.linalg.svd(vectors[piv[:k], :].T)
    return np.abs(vectors @ (ut @ v.conj())).argmax(axis=1).astype(np.int64)


def _merge_small(feats: np.ndarray, labels: np.ndarray, min_images: int) -> np.ndarray:
    """Clusters under ``min_images`` join the nearest larger one; relabel by size (largest 0)."""
    ids, counts = np.unique(labels, return_counts=True)
    big = ids[counts >= min_images]
    if len(big) == 0:
        return np.zeros(len(labels), np.int64)
    if len(big) < len(ids):
        centres = np.stack([feats[labels == c].mean(0) for c in big])
        small = ~np.isin(labels, big)
        labels = labels.copy()
        labels[small] = big[_nearest(feats[small], centres)]
    ids, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    order = np.lexsort((ids, -counts))  # largest first, ties by label
    rank = np.empty(len(ids), np.int64)
    rank[order] = np.arange(len(ids))
    return rank[inverse.ravel()]


# ------------------------------------------------------------------------------- scoring


def _hot_regions(means: np.ndarray) -> np.ndarray:
    """Per mean map [c, d]: the smallest pixel set holding ``_HOT_MASS`` of its mass (bool)."""
    order = np.argsort(-means, axis=1, kind="stable")
    sorted_mass = np.take_along_axis(means, order, axis=1)
    before = np.cumsum(sorted_mass, axis=1) - sorted_mass  # mass of the pixels ranked above
    keep_sorted = before < _HOT_MASS * means.sum(1, keepdims=True)
    mask = np.zeros_like(means, dtype=bool)
    np.put_along_axis(mask, order, keep_sorted, axis=1)
    return mask


def _chernoff_score(k: np.ndarray, n: np.ndarray, q: np.ndarray) -> np.ndarray:
    """-log10 of exp(-n·KL(k/n ‖ q)), 0 where k/n ≤ q: an upper bound on P(Bin(n, q) ≥ k)."""
    a = np.clip(k / np.maximum(n, 1), 0.0, 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        kl = np.where(a > 0, a * np.log(a / q), 0.0) + np.where(
            a < 1, (1 - a) * np.log((1 - a) / (1 - q)), 0.0
        )
    return np.where(a > q, n * kl / np.log(10.0), 0.0)


# ------------------------------------------------------------------------------- the ranking


@dataclass
class _Clusters:
    """Clusters of every cell, before ranking (internal)."""

    true: list[int]
    pred: list[int]
    cluster: list[int]
    per_cell: list[int]
    cell_images: list[int]
    members: list[np.ndarray]  # positions into the evaluated rows


def find_patterns(
    true: np.ndarray,
    pred: np.ndarray,
    maps: np.ndarray,
    rows: np.ndarray | None = None,
    min_images: int = 5,
    max_clusters: int = 8,
    landmarks: int = 256,
    seed: int = 0,
    baseline_images: int = _BASELINE_IMAGES,
) -> Patterns:
    """The ranked patterns of every cell of images with ``true`` and ``pred`` classes [N] and
    stored maps [N, 2, h, w] (predicted class, then true class or runner-up; float16 or float32,
    possibly memory-mapped). ``rows`` gives each image's manifest row (default 0..N-1)."""
    import scipy.linalg  # noqa: F401 (loaded before the limit below, which covers loaded BLAS only)
    from threadpoolctl import threadpool_limits  # small eigenproblems: threads only contend

    true = np.asarray(true, np.int64)
    pred = np.asarray(pred, np.int64)
    n, _, h, w = maps.shape
    rows = np.arange(n, dtype=np.int64) if rows is None else np.asarray(rows, np.int64)
    if not (len(true) == len(pred) == len(rows) == n):
        raise ValueError(f"{len(true)} labels, {len(pred)} predictions, {n} maps, {len(rows)} rows")
    pmaps = _read_normalised(maps, 0)
    with threadpool_limits(1):
        found = _cluster_cells(true, pred, pmaps, min_images, max_clusters, landmarks, seed, (h, w))
    c = len(found.members)
    labels = np.full(n, -1, np.int64)
    for i, members in enumerate(found.members):
        labels[members] = i
    sizes = np.array([len(m) for m in found.members], np.int64)
    pred_means = _means(pmaps, labels, c, sizes)
    del pmaps
    true_means = _true_means(maps, labels, c, sizes)
    score, looking, baseline = _scores(
        pred_means, found, true, pred, maps, labels, baseline_images, seed
    )
    centroid, spread = _centroids(pred_means.reshape(c, h, w))
    ptrue, ppred = np.array(found.true, np.int64), np.array(found.pred, np.int64)
    cluster = _number_in_cell(ptrue, ppred, score)
    flagged = score >= FLAG_SCORE
    order = np.lexsort((cluster, ppred, ptrue, -score, ptrue == ppred, ~flagged))
    ordered = [rows[found.members[i]] for i in order]
    offsets = np.concatenate([[0], np.cumsum([len(m) for m in ordered])]).astype(np.int64)
    return Patterns(
        true=ptrue[order].astype(np.int32),
        pred=ppred[order].astype(np.int32),
        cluster=cluster[order].astype(np.int32),
        clusters_in_cell=np.array(found.per_cell, np.int32)[order],
        cell_images=np.array(found.cell_images, np.int64)[order],
        score=score[order].astype(np.float32),
        looking=looking[order],
        baseline=baseline[order].astype(np.float32),
        centroid=centroid[order].astype(np.float32),
        spread=spread[order].astype(np.float32),
        pred_map=pred_means[order].reshape(-1, h, w).astype(np.float32),
        true_map=true_means[order].reshape(-1, h, w).astype(np.float32),
        offsets=offsets,
        rows=np.concatenate(ordered).astype(np.int64) if ordered else np.zeros(0, np.int64),
    )


def _cluster_cells(
    true: np.ndarray,
    pred: np.ndarray,
    pmaps: np.ndarray,
    min_images: int,
    max_clusters: int,
    landmarks: int,
    seed: int,
    shape: tuple[int, int],
) -> _Clusters:
    """Cluster every cell of at least ``min_images`` images."""
    k = int(max(true.max(initial=0), pred.max(initial=0))) + 1
    cell = true * k + pred
    order = np.argsort(cell, kind="stable")
    ids, starts, counts = np.unique(cell[order], return_index=True, return_counts=True)
    found = _Clusters([], [], [], [], [], [])
    for cell_id, start, count in zip(ids, starts, counts, strict=True):
        if count < min_images:
            continue
        members = order[start : start + count]
        t, p = divmod(int(cell_id), k)
        labels = cluster_maps(
            pmaps[members], (seed, t, p), min_images, max_clusters, landmarks, shape
        )
        groups = int(labels.max()) + 1
        split = np.argsort(labels, kind="stable")
        bounds = np.searchsorted(labels[split], np.arange(groups + 1))
        for g in range(groups):
            found.true.append(t)
            found.pred.append(p)
            found.cluster.append(g)
            found.per_cell.append(groups)
            found.cell_images.append(int(count))
            found.members.append(members[split[bounds[g] : bounds[g + 1]]])
    return found


def _means(values: np.ndarray, labels: np.ndarray, c: int, sizes: np.ndarray) -> np.ndarray:
    """Mean row of ``values`` [N, d] per label 0..c-1 (rows labelled -1 are left out)."""
    keep = labels >= 0
    sums = np.zeros((c, values.shape[1]), np.float64)
    _bincount_sums(sums, values[keep], labels[keep])
    return (sums / np.maximum(sizes, 1)[:, None]).astype(np.float32)


def _bincount_sums(out: np.ndarray, values: np.ndarray, labels: np.ndarray) -> None:
    for j in range(values.shape[1]):
        out[:, j] += np.bincount(labels, weights=values[:, j], minlength=len(out))


def _true_means(maps: np.ndarray, labels: np.ndarray, c: int, sizes: np.ndarray) -> np.ndarray:
    """Mean normalised true-class (runner-up) map per cluster, read chunk by chunk."""
    d = maps.shape[2] * maps.shape[3]
    sums = np.zeros((c, d), np.float64)
    for start in range(0, len(labels), _CHUNK_ROWS):
        lab = labels[start : start + _CHUNK_ROWS]
        keep = np.flatnonzero(lab >= 0)
        if len(keep):
            block = normalise_maps(maps[start : start + _CHUNK_ROWS, 1][keep])
            _bincount_sums(sums, block, lab[keep])
    return (sums / np.maximum(sizes, 1)[:, None]).astype(np.float32)


def _scores(
    means: np.ndarray,
    found: _Clusters,
    true: np.ndarray,
    pred: np.ndarray,
    maps: np.ndarray,
    labels: np.ndarray,
    baseline_images: int,
    seed: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Score, images looking at the hot region (k) and baseline share (q) of every cluster."""
    c = len(means)
    if c == 0:
        return np.zeros(0), np.zeros(0, np.int64), np.zeros(0)
    region = _hot_regions(means).astype(np.float32)  # [c, d]
    threshold = _LOOKS_THERE * (means * region).sum(1)  # half the cluster mean's share there
    rng = np.random.default_rng((seed, 1))
    n = len(true)
    sample = np.sort(rng.permutation(n)[:baseline_images]) if n > baseline_images else np.arange(n)
    base = normalise_maps(maps[sample, 0])  # [s, d]
    base_pred = pred[sample]
    cpred = np.array(found.pred, np.int64)
    hits = np.zeros(c, np.int64)
    others = np.zeros(c, np.int64)
    for start in range(0, c, 512):  # [s, 512] at a time
        stop = min(start + 512, c)
        looks = (base @ region[start:stop].T) >= threshold[start:stop]
        other = base_pred[:, None] != cpred[None, start:stop]
        hits[start:stop] = (looks & other).sum(0)
        others[start:stop] = other.sum(0)
    q = (hits + 0.5) / (others + 1.0)  # never 0 or 1: a finite score
    looking = np.zeros(c, np.int64)
    root_means = np.sqrt(means)
    for i, members in enumerate(found.members):  # k: the cluster's own images that look there
        members = np.sort(members)
        block = normalise_maps(maps[members, 0])
        looking[i] = int((block @ region[i] >= threshold[i]).sum())
        # the most typical image first (nearest the mean map): the pattern's example
        distance = ((np.sqrt(block) - root_means[i]) ** 2).sum(1)
        found.members[i] = members[np.argsort(distance, kind="stable")]
    cell_n = np.array(found.cell_images, np.int64)
    return _chernoff_score(looking, cell_n, q), looking, q


def _centroids(means: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Centre of mass (x, y) and spread of maps [c, h, w], in fractions of width and height."""
    _, h, w = means.shape
    ys = (np.arange(h) + 0.5) / h
    xs = (np.arange(w) + 0.5) / w
    mass = means.sum((1, 2)) + 1e-12
    px = means.sum(1) / mass[:, None]  # [c, w]
    py = means.sum(2) / mass[:, None]  # [c, h]
    cx, cy = px @ xs, py @ ys
    var = px @ xs**2 - cx**2 + py @ ys**2 - cy**2
    return np.stack([cx, cy], 1), np.sqrt(np.maximum(var, 0.0))


def _number_in_cell(true: np.ndarray, pred: np.ndarray, score: np.ndarray) -> np.ndarray:
    """1-based number of each cluster within its cell, highest score first."""
    order = np.lexsort((np.arange(len(score)), -score, pred, true))
    number = np.empty(len(score), np.int64)
    first = np.ones(len(order), bool)
    first[1:] = (true[order][1:] != true[order][:-1]) | (pred[order][1:] != pred[order][:-1])
    group_start = np.maximum.accumulate(np.where(first, np.arange(len(order)), 0))
    number[order] = np.arange(len(order)) - group_start + 1
    return number


# ------------------------------------------------------------------------------- stored


def result_patterns(result: Results, **options: Any) -> Patterns:
    """The ranked patterns of ``result``: computed once, stored beside it (``derived/patterns``)
    and read back from there. Raises StoreError for a result stored without maps."""
    if not result.has_maps:
        raise StoreError(
            f"{result.folder} holds no Grad-CAM maps (evaluated with --no-maps): "
            "evaluate again with maps to find patterns"
        )
    stored = load_derived(result, DERIVED)
    if stored is not None and not options:
        try:
            found = Patterns.from_arrays(stored)
            if int(found.version[0]) == VERSION:
                return found
        except (ValueError, IndexError):
            pass  # damaged or of another version: computed again
    index = result.index
    maps: Any = result.columns["maps"]
    if len(index) != maps.shape[0]:  # skipped files: only the evaluated rows
        maps = _Rows(maps, index)
    found = find_patterns(result.true, result.pred, maps, index, **options)
    if not options:
        save_derived(result, DERIVED, found.to_arrays())
    return found


def cell_maps(result: Results, true: int, pred: int) -> tuple[np.ndarray, np.ndarray] | None:
    """The mean normalised predicted-class and true-class (runner-up on the diagonal) maps
    [h, w] of one cell's images, read from the stored maps; None for an empty cell or a result
    stored without maps."""
    if not result.has_maps:
        return None
    rows = result.index[(result.true == true) & (result.pred == pred)]
    if not len(rows):
        return None
    maps = result.columns["maps"][rows]  # ascending rows: one pass over the file
    h, w = maps.shape[2:]
    means = [normalise_maps(maps[:, c]).mean(0).reshape(h, w) for c in (0, 1)]
    return means[0], means[1]


class _Rows:
    """The evaluated rows of a memory-mapped maps column, read as if it held only those."""

    def __init__(self, maps: np.ndarray, index: np.ndarray) -> None:
        self.maps, self.index = maps, index
        self.shape = (len(index), *maps.shape[1:])

    def __getitem__(self, key: Any) -> np.ndarray:
        if isinstance(key, tuple):
            first, rest = key[0], key[1:]
        else:
            first, rest = key, ()
        picked = self.maps[self.index[first]]
        return picked[(slice(None), *rest)] if rest else picked
