"""Two models on the same test set: what B fixed and broke relative to A, and is it chance?

Rows are matched by image path. Each matched image falls in one agreement cell: both right,
**fixed** (A wrong, B right), **newly broken** (A right, B wrong), or both wrong (with the
same wrong class, or different ones). McNemar's exact test asks whether fixed and broken
differ by more than chance: a two-sided binomial test of ``fixed`` out of ``fixed + broken``
at p = 0.5 (:func:`scipy.stats.binomtest`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import IntEnum

import numpy as np
import pandas as pd
from scipy.stats import binomtest
from sklearn.metrics import precision_recall_fscore_support

from core.errors import UserFacingError
from core.results import Results

__all__ = ["Agreement", "Comparison", "ModelResults", "compare", "mcnemar_exact"]


class Agreement(IntEnum):
    """The agreement cell of one image."""

    BOTH_RIGHT = 0
    FIXED = 1  # A wrong, B right
    BROKEN = 2  # A right, B wrong
    SAME_WRONG = 3  # both wrong, same predicted class
    DIFFERENT_WRONG = 4  # both wrong, different predicted classes

    @property
    def label(self) -> str:
        return _LABELS[self]


_LABELS = {
    Agreement.BOTH_RIGHT: "both right",
    Agreement.FIXED: "fixed (A wrong, B right)",
    Agreement.BROKEN: "newly broken (A right, B wrong)",
    Agreement.SAME_WRONG: "both wrong, same class",
    Agreement.DIFFERENT_WRONG: "both wrong, different classes",
}

_PER_IMAGE = ("paths", "rows_a", "rows_b", "true", "pred_a", "pred_b", "prob_a", "prob_b", "cell")


@dataclass(frozen=True)
class ModelResults:
    """One model's results on one dataset, as arrays (one entry per evaluated image)."""

    model: str
    dataset: str
    classes: tuple[str, ...]
    paths: np.ndarray  # str [N]: the row ids images are matched by
    true: np.ndarray  # int [N]
    pred: np.ndarray  # int [N]
    true_prob: np.ndarray  # float [N]

    @classmethod
    def of(cls, result: Results) -> ModelResults:
        """The per-image arrays of a stored result (its meta names the model and dataset)."""
        table = result.predictions
        return cls(
            model=result.meta.get("model", ""),
            dataset=result.meta.get("dataset", ""),
            classes=tuple(result.classes),
            paths=table["path"].to_numpy(dtype=str),
            true=table["true"].to_numpy(dtype=np.int64),
            pred=table["pred"].to_numpy(dtype=np.int64),
            true_prob=table["true_prob"].to_numpy(dtype=np.float32),
        )


@dataclass(frozen=True)
class Comparison:
    """The matched images of A and B, their agreement cells and the summary statistics."""

    a: str
    b: str
    classes: tuple[str, ...]
    paths: np.ndarray  # str [M], matched images
    rows_a: np.ndarray  # int [M]: position of each matched image in A's results
    rows_b: np.ndarray  # int [M]
    true: np.ndarray
    pred_a: np.ndarray
    pred_b: np.ndarray
    prob_a: np.ndarray  # true-class probability under A
    prob_b: np.ndarray
    cell: np.ndarray  # int8 [M]: Agreement per image
    only_a: int  # images evaluated by A only (e.g. skipped by B)
    only_b: int

    @property
    def prob_change(self) -> np.ndarray:
        """B's true-class probability minus A's, per matched image."""
        return self.prob_b.astype(np.float64) - self.prob_a.astype(np.float64)

    def counts(self) -> dict[Agreement, int]:
        """Images per agreement cell."""
        numbers = np.bincount(self.cell, minlength=len(Agreement))
        return {cell: int(numbers[cell]) for cell in Agreement}

    def table(self) -> pd.DataFrame:
        """The 2 × 2 table: rows A right / wrong, columns B right / wrong (counts)."""
        c = self.counts()
        wrong = c[Agreement.SAME_WRONG] + c[Agreement.DIFFERENT_WRONG]
        return pd.DataFrame(
            [[c[Agreement.BOTH_RIGHT], c[Agreement.BROKEN]], [c[Agreement.FIXED], wrong]],
            index=[f"{self.a} right", f"{self.a} wrong"],
            columns=[f"{self.b} right", f"{self.b} wrong"],
        )

    def p_value(self) -> float:
        """McNemar's exact test on the discordant pairs (fixed vs newly broken)."""
        c = self.counts()
        return mcnemar_exact(c[Agreement.FIXED], c[Agreement.BROKEN])

    def subset(self, mask: np.ndarray) -> Comparison:
        """Only the matched images where ``mask`` (bool over ``paths``) is true, in the same
        order: every count, test and table of the result is then of those images. A mask over
        A's evaluated rows (e.g. a slice) is one over these images as ``mask[self.rows_a]``.
        ``only_a`` and ``only_b`` still count the whole pairing's unmatched images."""
        keep = np.asarray(mask, bool)
        if keep.shape != self.cell.shape:
            raise ValueError(f"mask of {keep.shape} entries for {len(self.cell)} matched images")
        return replace(self, **{name: getattr(self, name)[keep] for name in _PER_IMAGE})

    def cell_positions(self, cell: Agreement, descending: bool = True) -> np.ndarray:
        """Matched positions of one cell, by change in true-class probability (B - A)."""
        found = np.flatnonzero(self.cell == cell)
        change = self.prob_change[found]
        order = np.lexsort((found, -change if descending else change))
        return found[order]

    def per_class(self) -> pd.DataFrame:
        """Recall and F1 of A and B per class, and the change (B - A)."""
        labels = np.arange(len(self.classes))
        columns: dict[str, object] = {"class": list(self.classes)}
        for side, pred in (("a", self.pred_a), ("b", self.pred_b)):
            _, recall, f1, support = precision_recall_fscore_support(
                self.true, pred, labels=labels, zero_division=0
            )
            columns |= {f"recall_{side}": recall, f"f1_{side}": f1}
        columns["support"] = support
        frame = pd.DataFrame(columns)
        frame["recall_change"] = frame["recall_b"] - frame["recall_a"]
        frame["f1_change"] = frame["f1_b"] - frame["f1_a"]
        return frame

    def top_class_changes(self, n: int) -> pd.DataFrame:
        """The ``n`` classes whose F1 changed most (either way), largest change first."""
        frame = self.per_class()
        changed = frame[(frame["f1_change"] != 0) | (frame["recall_change"] != 0)]
        order = changed["f1_change"].abs().sort_values(ascending=False, kind="stable").index
        return changed.loc[order].head(n)


def mcnemar_exact(fixed: int, broken: int) -> float:
    """Two-sided exact McNemar p-value for ``fixed`` vs ``broken`` discordant pairs (1 if none)."""
    if fixed + broken == 0:
        return 1.0
    return float(binomtest(fixed, fixed + broken, 0.5).pvalue)


def compare(a: ModelResults, b: ModelResults) -> Comparison:
    """Match A's and B's images by path and put each in its agreement cell.

    Raises :class:`UserFacingError` for results on different datasets or classes, or with no
    image in common.
    """
    _check_pair(a, b)
    common, rows_a, rows_b = np.intersect1d(a.paths, b.paths, return_indices=True)
    if not len(common):
        raise UserFacingError(
            f"{a.model!r} and {b.model!r} share no image path on dataset {a.dataset!r}"
        )
    true = a.true[rows_a]
    if not np.array_equal(true, b.true[rows_b]):
        bad = common[np.flatnonzero(true != b.true[rows_b])[0]]
        raise UserFacingError(f"{a.model!r} and {b.model!r} disagree on the label of {bad}")
    pred_a, pred_b = a.pred[rows_a], b.pred[rows_b]
    return Comparison(
        a=a.model,
        b=b.model,
        classes=a.classes,
        paths=common,
        rows_a=rows_a,
        rows_b=rows_b,
        true=true,
        pred_a=pred_a,
        pred_b=pred_b,
        prob_a=a.true_prob[rows_a],
        prob_b=b.true_prob[rows_b],
        cell=_cells(true, pred_a, pred_b),
        only_a=len(a.paths) - len(common),
        only_b=len(b.paths) - len(common),
    )


def _check_pair(a: ModelResults, b: ModelResults) -> None:
    if a.dataset != b.dataset:
        raise UserFacingError(
            f"cannot compare: {a.model!r} was evaluated on dataset {a.dataset!r}, "
            f"{b.model!r} on {b.dataset!r}; pick two evaluations of the same dataset"
        )
    if a.classes != b.classes:
        if len(a.classes) != len(b.classes):
            detail = f"{len(a.classes)} classes vs {len(b.classes)}"
        else:
            i = next(i for i, (x, y) in enumerate(zip(a.classes, b.classes, strict=True)) if x != y)
            detail = f"class {i} is {a.classes[i]!r} vs {b.classes[i]!r}"
        raise UserFacingError(
            f"cannot compare {a.model!r} with {b.model!r}: their classes differ ({detail})"
        )


def _cells(true: np.ndarray, pred_a: np.ndarray, pred_b: np.ndarray) -> np.ndarray:
    right_a, right_b = pred_a == true, pred_b == true
    cell = np.full(len(true), Agreement.DIFFERENT_WRONG, np.int8)
    cell[~right_a & ~right_b & (pred_a == pred_b)] = Agreement.SAME_WRONG
    cell[right_a & right_b] = Agreement.BOTH_RIGHT
    cell[~right_a & right_b] = Agreement.FIXED
    cell[right_a & ~right_b] = Agreement.BROKEN
    return cell
