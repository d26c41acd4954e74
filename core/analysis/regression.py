"""Did the candidate regress anywhere? Paired per-group tests of a candidate against a baseline.

The two results are paired image by image (:func:`core.analysis.comparison.compare`: matched
by path, same dataset and classes). Each **group** of images (all of them, the images of each
true class, and any named boolean mask, e.g. a metadata slice) gets its size, both models'
accuracy (recall, for a class), the images the candidate **broke** (baseline right, candidate
wrong) and **fixed** (the reverse), and McNemar's exact test on those two counts: the two-sided
binomial test of ``fixed`` out of ``broken + fixed`` at 0.5, i.e. ``min(1, 2 P(X <= min))``
(what :func:`scipy.stats.binomtest` computes; 1 when nothing changed). The p-values are
adjusted with Holm's method in two families: the model's own groups (overall and every class)
together, and the slices (saved slices, metadata values) together. A dataset's many metadata
bins then never dilute the power of the class tests, nor the classes that of the slices.
A group is a **regression** when the
candidate's accuracy is lower by at least ``min_drop`` and its adjusted p is below ``alpha``,
an **improvement** by the same rule the other way.

Every count is a :func:`numpy.bincount` or a mask sum over the paired rows: 1,000 classes and
30 slices of a million images take a fraction of a second once paired. For N checkpoints
against one baseline, :func:`check_many` and :func:`changes_table` give the groups × models
table (a family of tests per candidate, as one ``check`` call would make it).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from core.errors import UserFacingError
from core.results import Results

if TYPE_CHECKING:  # scipy and scikit-learn: imported by the functions that pair and test
    from core.analysis.comparison import Agreement, Comparison, ModelResults

__all__ = [
    "GROUP_KINDS",
    "Gate",
    "NotComparableError",
    "changes_table",
    "check_many",
    "check_pairs",
    "check_results",
    "group_counts",
    "holm",
    "mcnemar_p",
    "pair",
]

GROUP_KINDS = ("overall", "class", "slice")
REGRESSION, IMPROVEMENT = "regression", "improvement"
COLUMNS = [
    "group",  # "overall" | "class" | "slice"
    "name",
    "n",
    "baseline",
    "candidate",
    "change",  # candidate - baseline accuracy
    "broken",  # baseline right, candidate wrong
    "fixed",  # baseline wrong, candidate right
    "p_raw",  # McNemar's exact test
    "p",  # Holm-adjusted over all the groups of the check
    "verdict",  # "regression" | "improvement" | ""
]


class NotComparableError(UserFacingError):
    """The two results cannot be paired: another dataset, other classes or other images."""


def mcnemar_p(broken: np.ndarray, fixed: np.ndarray) -> np.ndarray:
    """Two-sided exact McNemar p-values, elementwise (1 where ``broken + fixed`` is 0).

    The binomial at 0.5 is symmetric, so scipy's two-sided ``binomtest(fixed, broken + fixed)``
    is twice the lower tail at the smaller count, capped at 1.
    """
    from scipy.stats import binom

    broken, fixed = np.asarray(broken, np.int64), np.asarray(fixed, np.int64)
    tail = binom.cdf(np.minimum(broken, fixed), broken + fixed, 0.5)
    return np.where(broken + fixed > 0, np.minimum(1.0, 2.0 * tail), 1.0)


def holm(p: np.ndarray) -> np.ndarray:
    """Holm's step-down adjusted p-values (family-wise error), in the order given.

    The i-th smallest of m p-values becomes ``max over j <= i of min(1, (m - j + 1) p_(j))``.
    """
    p = np.asarray(p, np.float64)
    order = np.argsort(p, kind="stable")
    steps = (len(p) - np.arange(len(p))) * p[order]
    adjusted = np.empty_like(p)
    adjusted[order] = np.minimum(1.0, np.maximum.accumulate(steps))
    return adjusted


def group_counts(
    true: np.ndarray,
    right_a: np.ndarray,
    right_b: np.ndarray,
    classes: Sequence[str],
    by: Sequence[str] = GROUP_KINDS,
    slices: Mapping[str, np.ndarray] | None = None,
) -> pd.DataFrame:
    """group, name, n, baseline_right, candidate_right, broken, fixed per group (no test yet).

    ``true`` and the two correctness vectors are over the paired images; ``slices`` are masks
    over the same images. Groups with no image are left out (their accuracy is undefined).
    """
    _check_kinds(by)
    broken, fixed = right_a & ~right_b, ~right_a & right_b
    parts: list[pd.DataFrame] = []
    if "overall" in by:
        counts = [len(true), right_a.sum(), right_b.sum(), broken.sum(), fixed.sum()]
        parts.append(_counts("overall", ["overall"], *(np.array([c]) for c in counts)))
    if "class" in by:
        k = len(classes)
        per = [np.bincount(true[v], minlength=k)[:k] for v in (right_a, right_b, broken, fixed)]
        parts.append(_counts("class", list(classes), np.bincount(true, minlength=k)[:k], *per))
    if "slice" in by and slices:
        sums = np.zeros((5, len(slices)), np.int64)
        for i, mask in enumerate(slices.values()):  # a loop over slices, each a vector op
            mask = np.asarray(mask, bool)
            sums[:, i] = [
                np.count_nonzero(mask & v) for v in (mask, right_a, right_b, broken, fixed)
            ]
        parts.append(_counts("slice", list(slices), *sums))
    table = pd.concat(parts, ignore_index=True) if parts else _counts("overall", [], *[[]] * 5)
    return table[table["n"] > 0].reset_index(drop=True)


def _counts(kind: str, names: list[str], *counts: np.ndarray | list[int]) -> pd.DataFrame:
    keys = ("n", "baseline_right", "candidate_right", "broken", "fixed")
    frame = pd.DataFrame({k: np.asarray(c, np.int64) for k, c in zip(keys, counts, strict=True)})
    frame.insert(0, "name", pd.Series(names, dtype=object))
    frame.insert(0, "group", kind)
    return frame


def _tested(counts: pd.DataFrame, alpha: float, min_drop: float) -> pd.DataFrame:
    """The counts with accuracies, McNemar's p, Holm's adjustment and a verdict per group."""
    n = counts["n"].to_numpy(np.float64)
    broken, fixed = counts["broken"].to_numpy(), counts["fixed"].to_numpy()
    table = counts[["group", "name", "n", "broken", "fixed"]].copy()
    table["baseline"] = counts["baseline_right"].to_numpy() / n
    table["candidate"] = counts["candidate_right"].to_numpy() / n
    table["change"] = (fixed - broken) / n
    table["p_raw"] = mcnemar_p(broken, fixed)
    table["p"] = np.nan
    family = (table["group"] == "slice").to_numpy()
    for members in (~family, family):  # the model's groups; the slices
        if members.any():
            table.loc[members, "p"] = holm(table.loc[members, "p_raw"].to_numpy())
    significant = table["p"].to_numpy() < alpha
    floor = min_drop * n - 1e-9  # the change in images, so 1/100 counts as 0.01 exactly
    verdict = np.full(len(table), "", dtype=object)
    verdict[significant & (broken - fixed >= floor)] = REGRESSION
    verdict[significant & (fixed - broken >= floor)] = IMPROVEMENT
    table["verdict"] = verdict
    return table[COLUMNS]


@dataclass(frozen=True, eq=False)
class Gate:
    """A candidate checked against a baseline: one row per group in :attr:`table`.

    ``comparison`` holds the paired images (:class:`core.analysis.comparison.Comparison`: paths,
    true class, both predictions and true-class probabilities, agreement cell per image);
    ``slices`` the slice masks over those images.
    """

    comparison: Comparison
    dataset: str
    table: pd.DataFrame
    alpha: float
    min_drop: float
    slices: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    by: tuple[str, ...] = GROUP_KINDS

    @property
    def baseline(self) -> str:
        return self.comparison.a

    @property
    def candidate(self) -> str:
        return self.comparison.b

    @property
    def passed(self) -> bool:
        """No group regressed."""
        return not (self.table["verdict"] == REGRESSION).any()

    @property
    def regressions(self) -> pd.DataFrame:
        """The regressed groups, most significant first."""
        return self._verdict(REGRESSION)

    @property
    def improvements(self) -> pd.DataFrame:
        """The improved groups, most significant first."""
        return self._verdict(IMPROVEMENT)

    def _verdict(self, verdict: str) -> pd.DataFrame:
        found = self.table[self.table["verdict"] == verdict]
        return found.sort_values(["p", "p_raw"], kind="stable")

    def mask(self, group: str, name: str) -> np.ndarray:
        """Which paired images belong to a group (bool over ``comparison``'s images)."""
        result = self.comparison
        if group == "overall":
            return np.ones(len(result.true), bool)
        if group == "class" and name in result.classes:
            return np.asarray(result.true == result.classes.index(name))
        if group == "slice" and name in self.slices:
            return self.slices[name]
        raise UserFacingError(f"no group {group}:{name} in this check")

    def subset(self, mask: np.ndarray) -> Gate:
        """The same check on only the paired images where ``mask`` (bool over
        ``comparison``'s images) is true, e.g. one slice of the test set: every group keeps
        just those images (a group left with none drops out) and is tested again, Holm's
        adjustment over the groups that remain."""
        keep = np.asarray(mask, bool)
        slices = {name: m[keep] for name, m in self.slices.items()}
        return check_pairs(
            self.comparison.subset(keep), self.dataset, self.by, slices, self.alpha, self.min_drop
        )

    def rows(self, group: str, name: str, cell: Agreement | None = None) -> np.ndarray:
        """Positions (into ``comparison``'s images) of a group's newly broken images, or of
        another agreement cell (``Agreement.FIXED``: the fixed ones); the fixed ones by gain in
        true-class probability, the broken ones by loss, largest first."""
        from core.analysis.comparison import Agreement

        chosen = Agreement.BROKEN if cell is None else Agreement(cell)
        ordered = self.comparison.cell_positions(chosen, descending=chosen != Agreement.BROKEN)
        return ordered[self.mask(group, name)[ordered]]


def check_pairs(
    comparison: Comparison,
    dataset: str = "",
    by: Sequence[str] = GROUP_KINDS,
    slices: Mapping[str, np.ndarray] | None = None,
    alpha: float = 0.05,
    min_drop: float = 0.01,
) -> Gate:
    """Test every group of an existing comparison (A = baseline, B = candidate).

    ``slices``: named masks over the comparison's images.
    """
    right_a, right_b = comparison.pred_a == comparison.true, comparison.pred_b == comparison.true
    aligned = {name: np.asarray(m, bool) for name, m in (slices or {}).items()}
    for name, m in aligned.items():
        if m.shape != (len(comparison.true),):
            raise UserFacingError(
                f"slice {name!r} has {m.shape} entries, the comparison {len(comparison.true)}"
            )
    counts = group_counts(comparison.true, right_a, right_b, comparison.classes, by, aligned)
    table = _tested(counts, alpha, min_drop)
    kept = aligned if "slice" in by else {}
    return Gate(comparison, dataset, table, alpha, min_drop, kept, tuple(by))


def check_results(
    baseline: Results,
    candidate: Results,
    by: Sequence[str] = GROUP_KINDS,
    slices: Mapping[str, np.ndarray] | None = None,
    alpha: float = 0.05,
    min_drop: float = 0.01,
) -> Gate:
    """Check ``candidate`` against ``baseline``, two stored results of one dataset and classes.

    ``slices``: named boolean masks over the baseline's manifest rows (``len(manifest)``) or
    over its evaluated images (``len(baseline.index)``, the order of ``.true`` and ``.pred``).
    Raises :class:`NotComparableError` when the results are of another dataset, other classes
    or not the same images (an image only one of them evaluated).
    """
    _check_kinds(by)
    paired = pair(baseline, candidate)
    masks = {
        name: _on_pairs(m, name, baseline, paired.rows_a) for name, m in (slices or {}).items()
    }
    dataset = baseline.meta.get("dataset", "")
    return check_pairs(paired, dataset, by, masks, alpha, min_drop)


def pair(baseline: Results, candidate: Results) -> Comparison:
    """The two results paired image by image (:func:`core.analysis.comparison.compare`).

    Results of one listing (equal manifests, the usual case: two models on one dataset) are
    paired by manifest row, with no sort of a million paths; others by path. Raises
    :class:`NotComparableError` for another dataset, other classes or not the same images.
    """
    from core.analysis.comparison import ModelResults, compare

    same_rows = baseline.manifest.equals(candidate.manifest)
    a, b = (_by_row(r) if same_rows else ModelResults.of(r) for r in (baseline, candidate))
    try:
        paired = compare(a, b)
    except UserFacingError as exc:
        raise NotComparableError(str(exc)) from None
    if paired.only_a or paired.only_b:
        raise NotComparableError(
            f"cannot compare {a.model!r} with {b.model!r}: not the same images "
            f"({paired.only_a:,} only in the first, {paired.only_b:,} only in the second, "
            f"e.g. {_unmatched_example(baseline, candidate)}); evaluate both on the same dataset"
        )
    if not same_rows:
        return paired
    paths = baseline.manifest.column("path").take(pa.array(paired.paths))  # row ids -> paths
    return replace(paired, paths=np.asarray(paths.to_numpy(zero_copy_only=False), dtype=str))


def _by_row(result: Results) -> ModelResults:
    """A result's per-image arrays keyed by manifest row instead of path."""
    from core.analysis.comparison import ModelResults

    return ModelResults(
        model=result.meta.get("model", ""),
        dataset=result.meta.get("dataset", ""),
        classes=tuple(result.classes),
        paths=result.index,
        true=result.true.astype(np.int64),
        pred=result.pred.astype(np.int64),
        true_prob=np.asarray(result.columns["true_prob"][result.index], np.float32),
    )


def check_many(
    baseline: Results,
    candidates: Sequence[Results],
    by: Sequence[str] = GROUP_KINDS,
    slices: Mapping[str, np.ndarray] | None = None,
    alpha: float = 0.05,
    min_drop: float = 0.01,
) -> dict[str, Gate]:
    """Each candidate checked against the baseline, keyed by model name, in the order given
    (Holm's adjustment within each candidate, as one ``check`` call makes it)."""
    gates = {}
    for candidate in candidates:
        gate = check_results(baseline, candidate, by, slices, alpha, min_drop)
        gates[gate.candidate] = gate
    return gates


def changes_table(gates: Mapping[str, Gate]) -> pd.DataFrame:
    """One row per (model, group): the gates' tables stacked, with a ``model`` column first.

    For a groups × models heatmap: ``table.pivot(index=["group", "name"], columns="model",
    values="change")`` (and ``values="verdict"`` or ``"p"`` for the marks); keep the row order
    with ``sort=False`` or by reindexing on the first gate's groups.
    """
    frames = [gate.table.assign(model=model) for model, gate in gates.items()]
    if not frames:
        return pd.DataFrame(columns=["model", *COLUMNS])
    table = pd.concat(frames, ignore_index=True)
    return table[["model", *COLUMNS]]


def _on_pairs(mask: np.ndarray, name: str, result: Results, rows: np.ndarray) -> np.ndarray:
    """A slice mask over the manifest or the evaluated images, taken at the paired images."""
    mask = np.asarray(mask, bool)
    if mask.ndim == 1 and len(mask) == len(result.manifest):
        return mask[result.index[rows]]
    if mask.ndim == 1 and len(mask) == len(result.index):
        return mask[rows]
    raise UserFacingError(
        f"slice {name!r} has {mask.shape} entries; give one per manifest row "
        f"({len(result.manifest):,}) or per evaluated image ({len(result.index):,})"
    )


def _unmatched_example(a: Results, b: Results) -> str:
    """One path evaluated by only one of the two."""
    paths = [r.manifest.column("path").take(pa.array(r.index)) for r in (a, b)]
    only = pc.filter(paths[0], pc.invert(pc.is_in(paths[0], value_set=paths[1].combine_chunks())))
    if not len(only):
        only = pc.filter(
            paths[1], pc.invert(pc.is_in(paths[1], value_set=paths[0].combine_chunks()))
        )
    return str(only[0]) if len(only) else "?"


def _check_kinds(by: Sequence[str]) -> None:
    unknown = [k for k in by if k not in GROUP_KINDS]
    if unknown or not by:
        raise UserFacingError(
            f"unknown group kind(s) {', '.join(map(repr, unknown)) or '(none given)'}; "
            f"choose from {', '.join(GROUP_KINDS)}"
        )
