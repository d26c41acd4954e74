"""Suspected label errors from a test set's predicted probabilities (cleanlab's method, chunked).

Per image: cleanlab's label-quality scores (``self_confidence`` = probability of the given
label; ``normalized_margin`` = (that - the largest other probability + 1) / 2), its
``find_label_issues`` flag (default filter ``prune_by_noise_rate``) and the suggested label
(the arg-max). :func:`label_quality` gives the same results as cleanlab run on a float32 copy
of the probabilities (tested against it), but reads ``probs`` (float16 or float32, possibly
memory-mapped) in row chunks, compares and takes maxima on the raw bits (non-negative floats
order like their bit patterns), and gathers only the columns the pruning step needs, so 1M ×
1,000 float16 probabilities never exist as float32 at once. The K × K steps are cleanlab's own.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np

from core.results import Results, StoreWriteError, load_derived, save_derived

__all__ = ["LabelQuality", "Score", "label_quality", "result_label_quality"]

Score = Literal["self_confidence", "normalized_margin"]

_CHUNK_ROWS = 32_768
_MISSING_CLASS_THRESHOLD = 2.0  # cleanlab's threshold for a class no image is labelled with
_MIN_EXAMPLES_PER_CLASS = 1  # cleanlab's default
_ARRAYS = ("self_confidence", "normalized_margin", "is_issue", "suggested")


@dataclass(frozen=True)
class LabelQuality:
    """Per-image label-quality results, aligned with the rows they were computed from."""

    self_confidence: np.ndarray  # float32 [N]: probability of the given label
    normalized_margin: np.ndarray  # float32 [N]
    is_issue: np.ndarray  # bool [N]: cleanlab's find_label_issues flag
    suggested: np.ndarray  # int64 [N]: the most probable class
    unsaved: str = ""  # why they are kept in memory only (could not be saved with the result)

    def __len__(self) -> int:
        return len(self.self_confidence)

    def to_arrays(self) -> dict[str, np.ndarray]:
        """The arrays by field name (e.g. to save each as a ``.npy`` file)."""
        return {name: getattr(self, name) for name in _ARRAYS}

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray]) -> LabelQuality:
        """Inverse of :meth:`to_arrays`; names a missing array or a length that differs."""
        names = _ARRAYS
        missing = [n for n in names if n not in arrays]
        if missing:
            raise ValueError(f"label-quality arrays missing: {', '.join(missing)}")
        lengths = {n: len(arrays[n]) for n in names}
        if len(set(lengths.values())) > 1:
            raise ValueError(f"label-quality arrays differ in length: {lengths}")
        sc, margin, issue, suggested = (np.asarray(arrays[n]) for n in names)
        return cls(sc, margin, issue, suggested)

    def ranked_issues(self, score: Score = "self_confidence") -> np.ndarray:
        """Row positions of the flagged images, most suspect (lowest score) first."""
        flagged = np.flatnonzero(self.is_issue)
        values = getattr(self, score)[flagged]
        return flagged[np.lexsort((flagged, values))]


def label_quality(
    labels: np.ndarray, probs: np.ndarray, chunk_rows: int = _CHUNK_ROWS
) -> LabelQuality:
    """Label-quality scores, issue flags and suggested labels for ``probs`` [N, K] and ``labels``.

    ``probs`` are out-of-sample probabilities (a test set the model never trained on).
    """
    # cleanlab (and with it scikit-learn and SciPy) is imported when scores are computed, not
    # when stored ones are read: a stored result's first page needs none of it
    from cleanlab.filter import _keep_at_least_n_per_class  # the K × K step, as cleanlab does
    from cleanlab.internal.constants import FLOATING_POINT_COMPARISON

    labels = _check(labels, probs)
    n, k = probs.shape
    sc = np.empty(n, np.float32)
    margin = np.empty(n, np.float32)
    suggested = np.empty(n, np.int64)
    confirmed = np.empty(n, bool)  # the prediction is the given label (never an issue)
    for rows, bits in _chunks(probs, chunk_rows):
        lab = labels[rows]
        at = np.arange(len(lab))
        suggested[rows] = bits.argmax(axis=1)
        sc[rows] = _as_float(bits[at, lab], probs.dtype)
        others = bits.copy()
        others[at, lab] = 0
        best_other = _as_float(others.max(axis=1), probs.dtype)
        margin[rows] = (sc[rows] - best_other + 1.0) / 2.0
        confirmed[rows] = sc[rows] + np.float32(FLOATING_POINT_COMPARISON) > best_other
    thresholds = _thresholds(labels, sc, k)
    joint = _confident_joint(labels, probs, suggested, thresholds, chunk_rows)
    prune = _keep_at_least_n_per_class(joint.T, n=_MIN_EXAMPLES_PER_CLASS, frac_noise=1.0)
    is_issue = _prune_by_noise_rate(labels, probs, prune) & ~confirmed
    return LabelQuality(sc, margin, is_issue, suggested)


def result_label_quality(result: Results) -> LabelQuality:
    """Label quality of ``result``'s evaluated rows: computed once, then stored beside the
    result (``derived/label_quality``) and read back from there. Where it cannot be saved (a
    read-only or full disk) it is returned all the same, with :attr:`LabelQuality.unsaved`
    saying why: the caller keeps it in memory."""
    stored = load_derived(result, "label_quality")
    if stored is not None and len(next(iter(stored.values()))) == len(result.index):
        return LabelQuality.from_arrays(stored)
    found = label_quality(result.true.astype(np.int64), result.probs(result.index))
    try:
        save_derived(result, "label_quality", found.to_arrays(), strict=True)
    except StoreWriteError as exc:
        return replace(found, unsaved=str(exc))
    return found


def _check(labels: np.ndarray, probs: np.ndarray) -> np.ndarray:
    if probs.ndim != 2 or probs.shape[1] < 2:
        raise ValueError(f"probs must be [N, K] with K >= 2 classes, got shape {probs.shape}")
    if probs.dtype.kind != "f":
        raise ValueError(f"probs must be floating point, got {probs.dtype}")
    labels = np.asarray(labels)
    if labels.shape != (probs.shape[0],):
        raise ValueError(f"{labels.shape[0]} labels for {probs.shape[0]} rows of probabilities")
    if labels.size and (labels.min() < 0 or labels.max() >= probs.shape[1]):
        raise ValueError(f"labels must lie in [0, {probs.shape[1]}), got {labels.min()}..")
    return labels.astype(np.int64, copy=False)


def _chunks(probs: np.ndarray, chunk_rows: int) -> Iterator[tuple[slice, np.ndarray]]:
    """Row slices of ``probs`` as unsigned-integer views of their bits (order-preserving)."""
    unsigned = np.dtype(f"u{probs.dtype.itemsize}")
    for start in range(0, probs.shape[0], chunk_rows):
        rows = slice(start, min(start + chunk_rows, probs.shape[0]))
        yield rows, np.ascontiguousarray(probs[rows]).view(unsigned)


def _as_float(bits: np.ndarray, dtype: np.dtype) -> np.ndarray:
    return bits.view(dtype).astype(np.float32)


def _thresholds(labels: np.ndarray, sc: np.ndarray, k: int) -> np.ndarray:
    """cleanlab's per-class confident thresholds: the mean self-confidence of each class."""
    from cleanlab.internal.constants import CONFIDENT_THRESHOLDS_LOWER_BOUND

    counts = np.bincount(labels, minlength=k)
    sums = np.bincount(labels, weights=sc.astype(np.float64), minlength=k)
    means = np.divide(sums, counts, out=np.full(k, _MISSING_CLASS_THRESHOLD), where=counts > 0)
    return np.clip(means, CONFIDENT_THRESHOLDS_LOWER_BOUND, None)


def _bit_cutoffs(thresholds: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Per class, the bits of the smallest ``dtype`` value v with v >= threshold - 1e-6."""
    target = thresholds - 1e-6
    cut = target.astype(dtype)
    low = cut.astype(np.float64) < target
    cut[low] = np.nextafter(cut[low], np.array(np.inf, dtype))
    cut[target <= 0] = 0
    return cut.view(f"u{dtype.itemsize}")


def _confident_joint(
    labels: np.ndarray,
    probs: np.ndarray,
    suggested: np.ndarray,
    thresholds: np.ndarray,
    chunk_rows: int,
) -> np.ndarray:
    """cleanlab's calibrated confident joint [given, true], counted chunk by chunk."""
    from cleanlab.count import calibrate_confident_joint

    k = probs.shape[1]
    cutoffs = _bit_cutoffs(thresholds, probs.dtype)
    counts = np.zeros(k * k, np.int64)
    for rows, bits in _chunks(probs, chunk_rows):
        confident = bits >= cutoffs
        num = np.count_nonzero(confident, axis=1)
        guess = np.where(num > 1, suggested[rows], confident.argmax(axis=1))
        keep = num > 0
        counts += np.bincount(labels[rows][keep] * k + guess[keep], minlength=k * k)
    joint = counts.reshape(k, k)
    np.fill_diagonal(joint, joint.diagonal().clip(min=1))
    return np.asarray(calibrate_confident_joint(joint, labels))


def _prune_by_noise_rate(labels: np.ndarray, probs: np.ndarray, prune: np.ndarray) -> np.ndarray:
    """cleanlab's ``prune_by_noise_rate``: in each given class k, for each true class j, flag
    the ``prune[j, k]`` images with the largest p(j) - p(k); reads only those columns."""
    k_classes = probs.shape[1]
    order = np.argsort(labels, kind="stable")
    bounds = np.concatenate([[0], np.cumsum(np.bincount(labels, minlength=k_classes))])
    flags = np.zeros(len(labels), bool)
    for k in range(k_classes):
        rows = order[bounds[k] : bounds[k + 1]]
        counts = prune[:, k].astype(np.int64)
        counts[k] = 0
        targets = np.flatnonzero(counts > 0)
        if len(rows) <= _MIN_EXAMPLES_PER_CLASS or not len(targets):
            continue
        block = probs[rows[:, None], np.append(targets, k)[None, :]].astype(np.float32)
        mask = np.zeros(len(rows), bool)
        for col, j in enumerate(targets):
            ranked = np.argsort(-(block[:, col] - block[:, -1]))
            mask[ranked[: counts[j]]] = True
        flags[rows] = mask
    return flags
