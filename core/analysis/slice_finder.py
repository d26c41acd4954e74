"""The automatic slice finder: conjunctions of up to three conditions where errors concentrate.

Searched columns: metadata, image properties, embedding clusters and the true class
(:func:`core.analysis.slice_columns.result_columns`), never the prediction or its confidence
(they restate the error). Numeric columns are binned first, as the Slices table bins them
(:func:`core.analysis.slices.column_bins`).

Search: SliceLine (``sliceline.Slicefinder``, the method Zeno uses; Sagadeeva and Boehm,
SIGMOD 2021), which enumerates the lattice of conjunctions level by level and prunes it with
upper bounds of its score ``alpha * (slice error rate / overall error rate - 1) - (1 - alpha)
* (rows / slice rows - 1)``: large slices with high error rates score highest.

- ``alpha`` is :data:`ALPHA` (0.98, not sliceline's 0.6): with 0.6 the size term outweighs
  everything, and a slice of 1 % of the images needs ``alpha > 0.96`` to score above zero even
  at five times the error rate.
- Sliceline evaluates candidates as a sparse product of the one-hot rows and the candidates,
  whose memory grows with rows × candidates (1.4 GB for 20,000 rows × 8 columns here). Here the
  evaluation step is replaced by exact counts from one ``bincount`` per combination of columns
  (the same statistics, in O(rows) memory), so the search runs on all rows up to
  :data:`SEARCH_ROWS` (a seeded sample beyond; then every reported number is recomputed on
  all rows).
- The lattice's level-3 join is a dense square of the level-2 slices, so the search takes
  the :data:`SEARCH_COLUMNS` columns whose values change the error rate most (chi-square of
  errors across a column's values, all rows), and in each column the :data:`COLUMN_VALUES`
  values with the most errors above their share. A conjunction whose columns show no effect
  on their own is not found; any slice that raises the error rate does raise it in the columns
  that define it.
- Slices of fewer than :data:`MIN_SHARE` of the images (at least :data:`MIN_IMAGES`) are not
  considered.

Each found slice carries its images, errors, accuracy with its 95 % Wilson interval, score
(the formula above, on all rows) and a one-sided Fisher exact test of its error rate against
the rest. Computed once per result and stored in ``derived/slices/`` (:func:`result_slices`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from core.analysis.slices import Bins, Condition, Slice, column_bins, wilson_interval
from core.data.metadata import ColumnSet
from core.results import Results, load_derived, save_derived

__all__ = [
    "ALPHA",
    "FoundSlice",
    "FoundSlices",
    "find_slices",
    "result_slices",
    "stored_slices",
]

VERSION = 1
DERIVED = "slices"
ALPHA = 0.98
MAX_CONDITIONS = 3
TOP = 20
SEARCH_ROWS = 1_000_000
SEARCH_COLUMNS = 12
COLUMN_VALUES = 8
MIN_SHARE = 0.001
MIN_IMAGES = 10


@dataclass(frozen=True)
class FoundSlice:
    """One slice the finder reports, with its numbers on all rows."""

    slice: Slice
    images: int
    errors: int
    score: float
    p_value: float  # one-sided Fisher exact: more errors in the slice than in the rest
    ci: tuple[float, float]  # 95 % Wilson interval of the accuracy

    @property
    def accuracy(self) -> float:
        return (self.images - self.errors) / self.images if self.images else math.nan

    def to_record(self, columns: ColumnSet | None = None) -> dict[str, Any]:
        """The CLI's JSON entry: slice, images, errors, accuracy, ci, score, p_value."""
        return {
            "slice": self.slice.to_json(columns),
            "param": self.slice.to_param(),
            "images": self.images,
            "errors": self.errors,
            "accuracy": self.accuracy,
            "ci": [self.ci[0], self.ci[1]],
            "score": self.score,
            "p_value": self.p_value,
        }


@dataclass(frozen=True)
class FoundSlices:
    """The found slices, best score first, and the columns they were found on."""

    slices: tuple[FoundSlice, ...]
    columns: tuple[str, ...]  # the columns searched (as named then)

    def __len__(self) -> int:
        return len(self.slices)

    def to_records(self, columns: ColumnSet | None = None, top: int | None = None) -> list:
        return [s.to_record(columns) for s in self.slices[:top]]

    def to_arrays(self) -> dict[str, np.ndarray]:
        params = [s.slice.to_param() for s in self.slices]
        return {
            "param": np.array(params, dtype=str) if params else np.zeros(0, "<U1"),
            "images": np.array([s.images for s in self.slices], np.int64),
            "errors": np.array([s.errors for s in self.slices], np.int64),
            "score": np.array([s.score for s in self.slices], np.float64),
            "p_value": np.array([s.p_value for s in self.slices], np.float64),
            "columns": np.array(self.columns, dtype=str) if self.columns else np.zeros(0, "<U1"),
            "version": np.array([VERSION]),
        }

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> FoundSlices:
        images, errors = np.asarray(arrays["images"]), np.asarray(arrays["errors"])
        low, high = wilson_interval(images - errors, images)
        found = []
        for i, param in enumerate(np.asarray(arrays["param"]).tolist()):
            found.append(
                FoundSlice(
                    Slice.parse(str(param)),
                    int(images[i]),
                    int(errors[i]),
                    float(arrays["score"][i]),
                    float(arrays["p_value"][i]),
                    (float(low[i]), float(high[i])),
                )
            )
        return cls(tuple(found), tuple(str(c) for c in np.asarray(arrays["columns"]).tolist()))


def find_slices(
    columns: ColumnSet,
    true: np.ndarray,
    pred: np.ndarray,
    top: int = TOP,
    max_conditions: int = MAX_CONDITIONS,
    alpha: float = ALPHA,
    search_rows: int = SEARCH_ROWS,
    seed: int = 0,
) -> FoundSlices:
    """The ``top`` slices of ``columns`` (rows aligned with ``true`` and ``pred``) where
    errors concentrate, best score first (see the module)."""
    errors = np.asarray(true) != np.asarray(pred)
    n = len(errors)
    names = tuple(columns.names)
    if n == 0 or not errors.any() or errors.all() or not len(columns):
        return FoundSlices((), names)
    binned = [column_bins(c) for c in columns]
    chosen = _chosen_columns(binned, errors)
    if not chosen:
        return FoundSlices((), names)
    codes = np.column_stack([_limited_codes(binned[i], errors) for i in chosen])
    rows = np.arange(n)
    if n > search_rows:
        rows = np.sort(np.random.default_rng(seed).choice(n, search_rows, replace=False))
    support = max(MIN_IMAGES, math.ceil(MIN_SHARE * len(rows)))
    finder = _slicefinder(alpha, top, max_conditions, support)
    finder.fit(codes[rows].astype(np.float64), errors[rows].astype(np.float64))
    searched = [binned[i] for i in chosen]
    candidates = [_conditions(values, searched) for values in finder.top_slices_]
    found: dict[bytes, FoundSlice] = {}  # by rows: of slices with the same rows, the shortest
    for conditions in sorted((c for c in candidates if c), key=len):
        mask = _mask(conditions, searched)
        key = np.packbits(mask).tobytes()
        if key not in found:
            found[key] = _measured(conditions, mask, errors, alpha)
    ranked = sorted(found.values(), key=lambda s: (-s.score, s.slice.to_param()))
    return FoundSlices(tuple(ranked[:top]), names)


def _chosen_columns(binned: Sequence[Bins], errors: np.ndarray) -> list[int]:
    """The :data:`SEARCH_COLUMNS` columns (of at least two values) whose values change the
    error rate most: smallest chi-square p-value (log, so that a million rows do not tie)."""
    from scipy.stats import chi2

    ranked = []
    for i, found in enumerate(binned):
        shifted = found.codes.astype(np.int64) + 1
        images = np.bincount(shifted, minlength=len(found.values) + 1)
        wrong = np.bincount(shifted, weights=errors, minlength=len(found.values) + 1)
        images, wrong = images[images > 0], wrong[images > 0]
        if len(images) < 2:
            continue
        rate = wrong.sum() / images.sum()
        expected = images * rate
        statistic = float(np.sum((wrong - expected) ** 2 / (expected * (1 - rate))))
        ranked.append((float(chi2.logsf(statistic, len(images) - 1)), i))
    return sorted(i for _, i in sorted(ranked)[:SEARCH_COLUMNS])


def _limited_codes(found: Bins, errors: np.ndarray) -> np.ndarray:
    """The column's codes with only its :data:`COLUMN_VALUES` values of most excess errors
    kept; every other row gets the code ``len(values)`` (never reported)."""
    other = len(found.values)
    shifted = found.codes.astype(np.int64) + 1
    images = np.bincount(shifted, minlength=other + 1)[1:]
    wrong = np.bincount(shifted, weights=errors, minlength=other + 1)[1:]
    excess = wrong - images * errors.mean()
    keep = np.argsort(-excess, kind="stable")[:COLUMN_VALUES]
    lookup = np.full(other + 1, other, np.int32)  # code + 1 -> kept code or "other"
    lookup[keep + 1] = keep
    return lookup[shifted]


def _conditions(values: Sequence[Any], binned: Sequence[Bins]) -> list[Condition] | None:
    """A sliceline slice (one code or None per searched column) as conditions; None when it
    names a value that is not reported (a column's "other" code)."""
    out = []
    for value, found in zip(values, binned, strict=True):
        if value is None or (isinstance(value, float) and math.isnan(value)):
            continue
        code = int(value)
        if code >= len(found.values):
            return None
        out.append(found.condition(code))
    return out or None


def _mask(conditions: list[Condition], binned: Sequence[Bins]) -> np.ndarray:
    """The rows of a slice on all rows, from the binned codes."""
    by_name = {b.column.name: b for b in binned}
    mask = np.ones(len(binned[0].codes), dtype=bool)
    for condition in conditions:
        found = by_name[condition.column]
        mask &= found.codes == found.values.index(condition.value)
    return mask


def _measured(
    conditions: list[Condition], mask: np.ndarray, errors: np.ndarray, alpha: float
) -> FoundSlice:
    """A slice's exact numbers on all rows."""
    from scipy.stats import fisher_exact

    images = int(mask.sum())
    wrong = int(np.count_nonzero(errors & mask))
    total, total_wrong = len(errors), int(errors.sum())
    rest, rest_wrong = total - images, total_wrong - wrong
    table = [[wrong, images - wrong], [rest_wrong, rest - rest_wrong]]
    p_value = float(fisher_exact(table, alternative="greater").pvalue)
    low, high = wilson_interval(images - wrong, images)
    average = total_wrong / total
    score = alpha * ((wrong / images) / average - 1) - (1 - alpha) * (total / images - 1)
    return FoundSlice(
        Slice(tuple(conditions)), images, wrong, float(score), p_value, (float(low), float(high))
    )


def _slicefinder(alpha: float, top: int, levels: int, support: int) -> Any:
    """``sliceline.Slicefinder`` whose candidate evaluation counts with ``bincount``."""
    import warnings

    from sliceline import Slicefinder

    class CountingSlicefinder(Slicefinder):  # type: ignore[misc]
        """Slicefinder with an exact, O(rows)-memory ``_eval_slice`` (see the module)."""

        def _eval_slice(self, x_encoded: Any, errors: np.ndarray, slices: Any, level: int) -> Any:
            return _eval_counts(self, x_encoded, errors, slices, level)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return CountingSlicefinder(alpha=alpha, k=top, max_l=levels, min_sup=support, verbose=False)


def _eval_counts(finder: Any, x_encoded: Any, errors: np.ndarray, slices: Any, level: int) -> Any:
    """Sliceline's ``_eval_slice`` statistics (score, errors, largest error, size of every
    candidate) from one ``bincount`` per combination of columns among the candidates."""
    from scipy import sparse

    slices = sparse.csr_matrix(slices)
    slices.sort_indices()
    count = slices.shape[0]
    if count == 0:
        return np.zeros((0, 4))
    domains = np.array([len(c) for c in finder._one_hot_encoder.categories_], np.int64)
    ends = np.cumsum(domains)
    starts = ends - domains
    local = _local_codes(finder, x_encoded, starts)
    features = np.searchsorted(ends, slices.indices, side="right")
    values = slices.indices - starts[features]
    lengths = np.diff(slices.indptr)
    sizes, wrong = np.zeros(count), np.zeros(count)
    for length in np.unique(lengths):
        which = np.flatnonzero(lengths == length)
        at = slices.indptr[which][:, None] + np.arange(length)
        combos, group = np.unique(features[at], axis=0, return_inverse=True)
        group = group.reshape(-1)
        for g, combo in enumerate(combos):
            members = group == g
            dims = tuple(int(d) for d in domains[combo])
            joint = np.ravel_multi_index(tuple(local[:, j] for j in combo), dims)
            cells = int(np.prod(dims))
            size = np.bincount(joint, minlength=cells)
            errs = np.bincount(joint, weights=errors, minlength=cells)
            key = np.ravel_multi_index(tuple(values[at[members]].T), dims)
            sizes[which[members]], wrong[which[members]] = size[key], errs[key]
    largest = (wrong > 0).astype(np.float64)  # the errors are 0 or 1
    scores = finder._score(sizes, wrong, x_encoded.shape[0])
    return np.column_stack([scores, wrong, largest, sizes])


def _local_codes(finder: Any, x_encoded: Any, starts: np.ndarray) -> np.ndarray:
    """Each row's value of each column as an index into the encoder's categories (read off
    the one-hot rows: one entry per column), computed once per fit."""
    cached = getattr(finder, "_local_codes", None)
    if cached is not None and cached.shape[0] == x_encoded.shape[0]:
        return cached
    x_encoded.sort_indices()
    local = x_encoded.indices.reshape(x_encoded.shape[0], len(starts)) - starts
    finder._local_codes = local
    return local


def stored_slices(result: Results, columns: ColumnSet) -> FoundSlices | None:
    """The slices found earlier for ``result`` on these ``columns`` (same
    :attr:`~core.data.metadata.ColumnSet.source`), or None."""
    stored = load_derived(result, DERIVED)
    if stored is None or not columns.source:
        return None
    try:
        if int(np.asarray(stored["version"])[0]) != VERSION:
            return None
        if str(np.asarray(stored["source"]).reshape(-1)[0]) != columns.source:
            return None
        return FoundSlices.from_arrays(stored)
    except (KeyError, IndexError, ValueError):
        return None


def result_slices(result: Results, columns: ColumnSet, **options: Any) -> FoundSlices:
    """The found slices of ``result`` (``columns`` from
    :func:`~core.analysis.slice_columns.result_columns`): read from ``derived/slices/``
    when found on the same columns, else found (seconds to a minute at a million images: run
    it in the background past a few thousand) and saved there."""
    if not options:
        found = stored_slices(result, columns)
        if found is not None:
            return found
    found = find_slices(columns, result.true, result.pred, **options)
    if not options and columns.source:
        arrays = {**found.to_arrays(), "source": np.array([columns.source], dtype=str)}
        save_derived(result, DERIVED, arrays)
    return found
