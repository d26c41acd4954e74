"""pytorch-grad-cam's display normalisation of raw maps, in NumPy: no torch needed.

ReLU, per-map min-max at the map's resolution (eps 1e-7), bilinear resize with half-pixel
centres (two small matrix products), min-max again. :mod:`core.explain.cam` builds its resize
matrices here too, so stored maps drawn without torch match :func:`~core.explain.cam.grad_cam`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["EPS", "display_maps", "resize_matrix"]

EPS = 1e-7  # pytorch-grad-cam's min-max epsilon


def resize_matrix(n_in: int, n_out: int) -> np.ndarray:
    """1-D bilinear resize with half-pixel centres as an [n_out, n_in] float64 matrix.

    The weights are those of ``F.interpolate(mode="bilinear", align_corners=False)`` (and OpenCV's
    ``resize``): source ``(i + 0.5) * n_in / n_out - 0.5``, clamped to the edge pixels.
    """
    src = np.maximum((np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5, 0.0)
    lo = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
    hi = np.minimum(lo + 1, n_in - 1)
    rows = np.arange(n_out)
    weights = np.zeros((n_out, n_in))
    weights[rows, lo] += 1 - (src - lo)
    weights[rows, hi] += src - lo  # a separate statement: adds up where hi == lo (clamped)
    return weights


def _minmax(maps: np.ndarray) -> np.ndarray:
    """Per-map ``x - min; x / (1e-7 + max)`` over the last two dims."""
    low = maps.min(axis=(-2, -1), keepdims=True)
    maps = maps - low
    return maps / (maps.max(axis=(-2, -1), keepdims=True) + np.float32(EPS))


def display_maps(raw: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """Raw maps [..., h, w] (any float dtype) -> float32 [..., H, W] in [0, 1] at ``size``."""
    raw = np.asarray(raw)
    if raw.ndim < 2 or not np.issubdtype(raw.dtype, np.floating):
        raise ValueError("raw maps must be a float array [..., h, w]")
    height, width = (int(s) for s in size)
    if height < 1 or width < 1:
        raise ValueError(f"size must be two positive integers, got {tuple(size)}")
    wy = resize_matrix(raw.shape[-2], height).astype(np.float32)
    wx_t = resize_matrix(raw.shape[-1], width).T.astype(np.float32)
    maps = _minmax(np.maximum(raw.astype(np.float32), 0))
    return _minmax(wy @ maps @ wx_t).astype(np.float32, copy=False)
