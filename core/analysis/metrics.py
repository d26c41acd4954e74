"""Confusion matrix and per-class metrics over a predictions table (scikit-learn underneath)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import pandas as pd

__all__ = [
    "accuracy",
    "block_classes",
    "block_sums",
    "cell_rows",
    "confusion_matrix",
    "focus_classes",
    "most_confused_classes",
    "per_class_metrics",
    "top_confused_pairs",
]

Normalize = Literal["true", "pred", "all"] | None
"""``"true"``: share of each row (recall view); ``"pred"``: of each column; ``"all"``: of all."""


def confusion_matrix(
    predictions: pd.DataFrame, num_classes: int, normalize: Normalize = None
) -> np.ndarray:
    """[true, pred] matrix of counts, or of shares when ``normalize`` is given."""
    true = predictions["true"].to_numpy(dtype=np.int64)
    pred = predictions["pred"].to_numpy(dtype=np.int64)
    flat = np.bincount(true * num_classes + pred, minlength=num_classes * num_classes)
    counts = flat.reshape(num_classes, num_classes)  # one vectorised pass: 1M rows in ~10 ms
    if normalize is None:
        return counts
    totals = {
        "true": counts.sum(axis=1, keepdims=True),
        "pred": counts.sum(axis=0, keepdims=True),
        "all": counts.sum(),
    }[normalize]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.nan_to_num(counts / totals)  # an empty row/column is 0, as scikit-learn gives


def accuracy(predictions: pd.DataFrame) -> float:
    """Share of images whose predicted class is the true class."""
    if predictions.empty:
        return float("nan")
    return float(np.mean(predictions["true"].to_numpy() == predictions["pred"].to_numpy()))


def per_class_metrics(predictions: pd.DataFrame, classes: Sequence[str]) -> pd.DataFrame:
    """Precision, recall, F1 and support per class (0 where undefined), as scikit-learn's
    ``precision_recall_fscore_support(..., zero_division=0)`` gives them, read off the
    confusion matrix: one pass over the rows, not one per class (1M rows × 1,000 classes)."""
    counts = confusion_matrix(predictions, len(classes))
    hits = np.diag(counts).astype(np.float64)
    support = counts.sum(axis=1)
    precision = _share(hits, counts.sum(axis=0))
    recall = _share(hits, support)
    f1 = _share(2 * precision * recall, precision + recall)
    return pd.DataFrame(
        {
            "class": list(classes),
            "precision": precision,
            "recall": recall,
            "f1": f1,
            "support": support,
        }
    )


def _share(part: np.ndarray, whole: np.ndarray) -> np.ndarray:
    """``part / whole``, 0 where ``whole`` is 0."""
    return np.divide(part, whole, out=np.zeros(len(part)), where=whole > 0)


def top_confused_pairs(
    predictions: pd.DataFrame, classes: Sequence[str], k: int = 10
) -> pd.DataFrame:
    """The ``k`` off-diagonal cells with the most images, largest first."""
    matrix = confusion_matrix(predictions, len(classes))
    np.fill_diagonal(matrix, 0)
    true, pred = np.nonzero(matrix)
    counts = matrix[true, pred]
    order = np.lexsort((pred, true, -counts))[:k]  # by count, then row, then column
    return pd.DataFrame(
        {
            "true": true[order],
            "pred": pred[order],
            "true_name": [classes[i] for i in true[order]],
            "pred_name": [classes[i] for i in pred[order]],
            "count": counts[order],
        }
    )


def most_confused_classes(predictions: pd.DataFrame, num_classes: int, n: int) -> list[int]:
    """The ``n`` classes with the most errors (as true or predicted class), in class order."""
    matrix = confusion_matrix(predictions, num_classes)
    np.fill_diagonal(matrix, 0)
    errors = matrix.sum(axis=0) + matrix.sum(axis=1)
    ranked = np.lexsort((np.arange(num_classes), -errors))[:n]  # most errors, then class order
    return sorted(int(c) for c in ranked)


def cell_rows(predictions: pd.DataFrame, true: int, pred: int) -> pd.DataFrame:
    """The predictions rows of one cell: true class ``true``, predicted class ``pred``."""
    mask = (predictions["true"] == true) & (predictions["pred"] == pred)
    return predictions.loc[mask].reset_index(drop=True)


def focus_classes(matrix: np.ndarray, cls: int, n: int) -> list[int]:
    """``cls`` and its ``n - 1`` most confused partners (errors in its row plus its column),
    in class order: the neighbourhood of one class in a large matrix."""
    errors = matrix[cls, :] + matrix[:, cls]
    errors = errors.astype(np.int64)
    errors[cls] = -1
    order = np.lexsort((np.arange(len(errors)), -errors))
    partners = [int(c) for c in order[: n - 1] if errors[c] > 0]
    return sorted([cls, *partners])


def block_classes(block: int, size: int, num_classes: int) -> list[int]:
    """Class indices of overview block ``block`` (blocks of ``size`` consecutive classes)."""
    return list(range(block * size, min((block + 1) * size, num_classes)))


def block_sums(matrix: np.ndarray, size: int) -> np.ndarray:
    """The matrix summed over square blocks of ``size`` classes: a zoomable overview
    (1,000 classes in blocks of 25 → 40 × 40)."""
    n = len(matrix)
    blocks = -(-n // size)
    padded = np.zeros((blocks * size, blocks * size), dtype=matrix.dtype)
    padded[:n, :n] = matrix
    return padded.reshape(blocks, size, blocks, size).sum(axis=(1, 3))
