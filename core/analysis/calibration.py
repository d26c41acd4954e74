"""Calibration and per-class charts' numbers: reliability bins with ECE, confidence histograms.

All vectorised over the per-image columns (confidence = probability of the predicted class,
correct = predicted equals true), so a million images take milliseconds. Each bin keeps its
bounds, so a click on a bar can list exactly its images (:func:`in_bin`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

__all__ = ["Reliability", "confidence_histogram", "in_bin", "reliability"]


@dataclass(frozen=True)
class Reliability:
    """Equal-width confidence bins: per bin count, mean confidence and accuracy; and the ECE."""

    table: pd.DataFrame  # bin, lo, hi, count, confidence, accuracy, gap
    ece: float  # expected calibration error: sum over bins of count/N * |accuracy - confidence|


def _edges(bins: int) -> np.ndarray:
    return np.linspace(0.0, 1.0, bins + 1)


def _bin_of(confidence: np.ndarray, bins: int) -> np.ndarray:
    """Bin of each value: [lo, hi) except the last, which includes 1.0."""
    return np.clip((np.asarray(confidence, np.float64) * bins).astype(np.int64), 0, bins - 1)


def reliability(confidence: np.ndarray, correct: np.ndarray, bins: int = 10) -> Reliability:
    """The reliability diagram's bins and the expected calibration error (Guo et al. 2017)."""
    which = _bin_of(confidence, bins)
    count = np.bincount(which, minlength=bins)
    conf_sum = np.bincount(which, weights=np.asarray(confidence, np.float64), minlength=bins)
    right = np.bincount(which, weights=np.asarray(correct, np.float64), minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.where(count > 0, conf_sum / count, np.nan)
        accuracy = np.where(count > 0, right / count, np.nan)
    edges = _edges(bins)
    n = int(count.sum())
    gap = np.abs(accuracy - mean_conf)
    ece = float(np.nansum(count * gap) / n) if n else 0.0
    table = pd.DataFrame(
        {
            "bin": np.arange(bins),
            "lo": edges[:-1],
            "hi": edges[1:],
            "count": count,
            "confidence": mean_conf,
            "accuracy": accuracy,
            "gap": gap,
        }
    )
    return Reliability(table, ece)


def confidence_histogram(
    confidence: np.ndarray, correct: np.ndarray, bins: int = 20
) -> pd.DataFrame:
    """Counts of right and of wrong predictions per confidence bin: bin, lo, hi, right, wrong."""
    which = _bin_of(confidence, bins)
    correct = np.asarray(correct, bool)
    edges = _edges(bins)
    return pd.DataFrame(
        {
            "bin": np.arange(bins),
            "lo": edges[:-1],
            "hi": edges[1:],
            "right": np.bincount(which[correct], minlength=bins),
            "wrong": np.bincount(which[~correct], minlength=bins),
        }
    )


def in_bin(confidence: np.ndarray, bin_index: int, bins: int) -> np.ndarray:
    """Bool mask of the images in bin ``bin_index`` of ``bins`` (the same rule as the charts)."""
    return _bin_of(confidence, bins) == bin_index
