"""Can this map be trusted? Whether the model really uses what a map highlights.

**The score of a map** (:func:`faithfulness`): the share of the class's probability that is lost
when what the map highlights is removed, ``score = (p(x) - p(x * (1 - map))) / p(x)``, with ``x``
the normalised input (a removed pixel becomes the dataset mean). Higher is more faithful: 0.98
("drop 98 %") says the model needs that region; near 0, that it does without it; below 0, that
the class is more likely without it. Both halves are pytorch-grad-cam's
``CamMultImageConfidenceChange`` with a softmax target (``ClassifierOutputSoftmaxTarget``): on the
inverted map (``remove_change``) and on the map itself (``keep_change``: the image multiplied by
the map, the region alone). Beside the score the raw probabilities are kept. Removal rather than
keeping is the headline because the region alone is far from any training image for small
models (on the samples ``keep_change`` is about -0.97 for faithful and random maps alike), while
removal separates them (0.98 against 0.00 on the shortcut ResNet's fooled images). Either
depends on how much of the image a map covers; :func:`random_maps` gives the baseline of the
same area. One forward pass per image and two per map, batched.

**Deletion and insertion curves** (:func:`deletion_insertion`; Petsiuk et al., RISE 2018) at the
map's own grid cells: the cells are ranked by the map's mean inside them, and the class
probability is measured as the cells are removed (set to the mean) or inserted (into a blurred
copy of the image), most important first: ``h * w + 1`` images per curve, one batch. A faithful
map has a low deletion and a high insertion area under the curve (AUC); the same curves for a
seeded random order of the same cells is the baseline a map must beat.

**A random map** (:func:`random_maps`): the map's own grid cells shuffled by a seeded
permutation, then resized as the map was: the same values and the same area, in random places.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from core.explain.hooks import check_eval, class_matrix, model_param, to_model, wants_channels_last

__all__ = [
    "Curves",
    "MapScores",
    "cell_index",
    "default_grid",
    "deletion_insertion",
    "faithfulness",
    "grid_means",
    "median",
    "random_maps",
]

BLUR_KERNEL, BLUR_SIGMA = 11, 5.0  # RISE's insertion start: a heavily blurred copy


@dataclass(frozen=True)
class MapScores:
    """Faithfulness of maps [N, K] (one per image and class); probabilities are softmax.

    ``before``: p(class | image); ``keep``: p(class | image × map); ``remove``:
    p(class | image × (1 − map)).
    """

    before: np.ndarray
    keep: np.ndarray
    remove: np.ndarray

    @property
    def score(self) -> np.ndarray:
        """The headline, higher = more faithful: the share of the probability lost when the
        map's region is removed, ``(before - remove) / before``."""
        return (self.before - self.remove) / np.maximum(self.before, _TINY)

    @property
    def keep_change(self) -> np.ndarray:
        """pytorch-grad-cam's ``CamMultImageConfidenceChange`` (softmax target) of the map."""
        return self.keep - self.before

    @property
    def remove_change(self) -> np.ndarray:
        """pytorch-grad-cam's ``CamMultImageConfidenceChange`` of the inverted map (1 − map)."""
        return self.remove - self.before

    @property
    def average_drop(self) -> np.ndarray:
        """Average Drop (Chattopadhyay et al. 2018, torchcam): ``max(0, before - keep) / before``;
        lower = more faithful."""
        return np.maximum(self.before - self.keep, 0) / np.maximum(self.before, _TINY)

    def record(self, i: int, k: int = 0) -> dict[str, float]:
        """One map's numbers as plain floats: score and the raw metrics."""
        return {
            "score": float(self.score[i, k]),
            "before": float(self.before[i, k]),
            "remove": float(self.remove[i, k]),
            "keep": float(self.keep[i, k]),
            "remove_change": float(self.remove_change[i, k]),
            "keep_change": float(self.keep_change[i, k]),
            "average_drop": float(self.average_drop[i, k]),
        }


_TINY = 1e-12


def _probs(model: nn.Module, x: Tensor, classes: Tensor, batch_size: int) -> Tensor:
    """Softmax probabilities of ``classes[i]`` ([N] or [N, K]) for each image ``x[i]``, from
    one forward pass per image, in chunks; float32 on the CPU, shaped like ``classes``."""
    channels_last = wants_channels_last(model)
    cls2 = classes.reshape(len(classes), -1)
    out = []
    with torch.inference_mode():
        for start in range(0, len(x), batch_size):
            chunk = to_model(model, x[start : start + batch_size], channels_last)
            logits = model(chunk)
            if not isinstance(logits, Tensor) or logits.dim() != 2:
                raise ValueError("the model must return a logits tensor [N, num_classes]")
            cls = cls2[start : start + batch_size].to(logits.device)
            out.append(logits.float().softmax(1).gather(1, cls).cpu())
    probs = torch.cat(out) if out else torch.zeros(0, cls2.shape[1])
    return probs.view(classes.shape)


def _as_nk(maps: Tensor, n: int) -> tuple[Tensor, bool]:
    if maps.dim() == 3:
        return maps[:, None], False
    if maps.dim() != 4 or len(maps) != n:
        raise ValueError(f"maps must be [N, H, W] or [N, K, H, W] with N={n}")
    return maps, True


def faithfulness(
    model: nn.Module,
    images: Tensor,
    maps: Tensor | np.ndarray,
    classes: int | Tensor | Sequence[int],
    batch_size: int = 64,
    before: np.ndarray | None = None,
    keep: bool = True,
) -> MapScores:
    """Score maps ``[N, H, W]`` (or ``[N, K, H, W]``) in [0, 1] of ``images`` (normalised model
    input ``[N, C, H, W]``) for ``classes`` (``[N]`` or ``[N, K]``): see the module docstring.

    One forward pass per image (all of its classes) and two per map (kept, removed). Returns
    arrays ``[N, K]`` (``K = 1`` for 3-D maps). ``before`` (``[N]`` or ``[N, K]``), when already
    known, saves its pass; ``keep=False`` skips the kept images (``keep`` is NaN then).
    """
    check_eval(model)
    maps_t = torch.as_tensor(np.asarray(maps) if isinstance(maps, np.ndarray) else maps).float()
    maps_t, _ = _as_nk(maps_t, len(images))
    n, k = maps_t.shape[:2]
    cls, _ = class_matrix(classes, n)
    if cls.shape[1] == 1 and k > 1:
        cls = cls.expand(n, k)
    if cls.shape != (n, k):
        raise ValueError(f"classes must match the maps: [N] or [N, {k}]")
    if maps_t.shape[-2:] != images.shape[-2:]:
        raise ValueError(
            f"maps are {tuple(maps_t.shape[-2:])}, images {tuple(images.shape[-2:])}: "
            "score maps at input resolution"
        )
    param = model_param(model)
    device = param.device if param is not None else images.device
    x = images.float().to(device)
    m = maps_t.to(device)
    if before is None:
        before_t = _probs(model, x, cls, batch_size)
    else:
        before_t = torch.as_tensor(np.asarray(before, np.float32)).reshape(n, -1).expand(n, k)
    flat_cls = cls.reshape(-1)
    if keep:
        kept = (x[:, None] * m[:, :, None]).flatten(0, 1)
        kept_p = _probs(model, kept, flat_cls, batch_size).view(n, k)
    else:
        kept_p = torch.full((n, k), float("nan"))
    gone = (x[:, None] * (1 - m[:, :, None])).flatten(0, 1)
    removed = _probs(model, gone, flat_cls, batch_size).view(n, k)
    return MapScores(before_t.numpy(), kept_p.numpy(), removed.numpy())


# --------------------------------------------------------------------------- grid cells


def cell_index(size: tuple[int, int], grid: tuple[int, int]) -> Tensor:
    """[H, W] int64: which of the ``h × w`` grid cells each pixel of an ``H × W`` input lies in
    (row-major; a cell covers ``H / h`` rows, as ``adaptive_avg_pool2d`` partitions them)."""
    (height, width), (h, w) = size, grid
    if not (0 < h <= height and 0 < w <= width):
        raise ValueError(f"a {h}×{w} grid does not fit a {height}×{width} map")
    rows = torch.arange(height) * h // height
    cols = torch.arange(width) * w // width
    return rows[:, None] * w + cols[None, :]


def grid_means(maps: Tensor, grid: tuple[int, int]) -> Tensor:
    """The mean of each map ``[..., H, W]`` inside each grid cell: ``[..., h * w]``."""
    index = cell_index((int(maps.shape[-2]), int(maps.shape[-1])), grid).to(maps.device)
    flat = maps.reshape(-1, maps.shape[-2] * maps.shape[-1]).float()
    cells = grid[0] * grid[1]
    sums = torch.zeros(len(flat), cells, device=maps.device).index_add_(1, index.reshape(-1), flat)
    counts = torch.bincount(index.reshape(-1), minlength=cells).float()
    return (sums / counts).reshape(*maps.shape[:-2], cells)


def random_maps(maps: Tensor, grid: tuple[int, int], seed: int = 0) -> Tensor:
    """Each map's own grid-cell means in a seeded random order, resized back as maps are
    (bilinear, half-pixel centres, min-max): same values and area, random places."""
    from core.explain.cam import finish_maps

    cells = grid_means(maps, grid)
    gen = torch.Generator().manual_seed(seed)
    flat = cells.reshape(-1, cells.shape[-1])
    order = torch.argsort(torch.rand(flat.shape, generator=gen), dim=1).to(flat.device)
    shuffled = flat.gather(1, order).reshape(*maps.shape[:-2], *grid)
    return finish_maps(shuffled, (int(maps.shape[-2]), int(maps.shape[-1])))


# --------------------------------------------------------------------------- curves


@dataclass(frozen=True)
class Curves:
    """Deletion and insertion curves of one map and of a seeded random order of its cells.

    ``fraction[s]`` is the share of cells removed (deletion) or inserted (insertion) at step s;
    the curves hold the class probability there.
    """

    fraction: np.ndarray
    deletion: np.ndarray
    insertion: np.ndarray
    random_deletion: np.ndarray
    random_insertion: np.ndarray
    grid: tuple[int, int]

    @staticmethod
    def auc(curve: np.ndarray, fraction: np.ndarray) -> float:
        """Area under a curve over [0, 1] (trapezoids)."""
        return float(np.sum((curve[1:] + curve[:-1]) * np.diff(fraction)) / 2)

    @property
    def deletion_auc(self) -> float:
        return self.auc(self.deletion, self.fraction)

    @property
    def insertion_auc(self) -> float:
        return self.auc(self.insertion, self.fraction)

    @property
    def random_deletion_auc(self) -> float:
        return self.auc(self.random_deletion, self.fraction)

    @property
    def random_insertion_auc(self) -> float:
        return self.auc(self.random_insertion, self.fraction)

    def summary(self) -> dict[str, Any]:
        return {
            "grid": list(self.grid),
            "deletion_auc": self.deletion_auc,
            "insertion_auc": self.insertion_auc,
            "random_deletion_auc": self.random_deletion_auc,
            "random_insertion_auc": self.random_insertion_auc,
        }


def _blurred(x: Tensor) -> Tensor:
    from torchvision.transforms.v2.functional import gaussian_blur

    size = min(BLUR_KERNEL, 2 * (min(x.shape[-2:]) // 2) - 1)
    return gaussian_blur(x, [max(size, 1)] * 2, [BLUR_SIGMA] * 2) if size > 1 else x


def _curve(
    model: nn.Module,
    x: Tensor,
    start: Tensor,
    rank: Tensor,
    index: Tensor,
    cls: int,
    batch_size: int,
) -> np.ndarray:
    """Probabilities as cells (by ``rank``, most important first) go from ``x`` to ``start``."""
    steps = len(rank) + 1
    pixel_rank = rank[index]  # [H, W]: the step at which each pixel changes
    out = []
    for first in range(0, steps, batch_size):
        k = torch.arange(first, min(first + batch_size, steps), device=x.device)
        mask = (pixel_rank[None] < k[:, None, None]).to(x.dtype)[:, None]  # [s, 1, H, W]
        batch = x[None] * (1 - mask) + start[None] * mask
        out.append(_probs(model, batch, torch.full((len(k),), cls), batch_size))
    return torch.cat(out).numpy()


def deletion_insertion(
    model: nn.Module,
    image: Tensor,
    cam_map: Tensor | np.ndarray,
    cls: int,
    grid: tuple[int, int],
    seed: int = 0,
    batch_size: int = 64,
) -> Curves:
    """Deletion and insertion curves of ``cam_map`` ``[H, W]`` for class ``cls`` of ``image``
    (normalised model input ``[C, H, W]``) at ``grid`` cells, and of a seeded random cell order.

    Deletion replaces cells by 0 (the dataset mean after normalisation); insertion starts from
    a blurred copy (Gaussian, kernel 11, sigma 5, as RISE) and puts the cells back. Four
    curves of ``h * w + 1`` images each.
    """
    check_eval(model)
    param = model_param(model)
    device = param.device if param is not None else image.device
    x = image.float().to(device)
    m = torch.as_tensor(np.asarray(cam_map)).float()
    if m.shape != x.shape[-2:]:
        raise ValueError(f"the map is {tuple(m.shape)}, the image {tuple(x.shape[-2:])}")
    index = cell_index((int(x.shape[-2]), int(x.shape[-1])), grid).to(device)
    means = grid_means(m, grid)
    order = torch.argsort(-means, stable=True)  # most important cell first
    cells = len(order)
    rank = torch.empty(cells, dtype=torch.long)
    rank[order] = torch.arange(cells)
    gen = torch.Generator().manual_seed(seed)
    random_rank = torch.empty(cells, dtype=torch.long)
    random_rank[torch.randperm(cells, generator=gen)] = torch.arange(cells)
    zero, blur = torch.zeros_like(x), _blurred(x[None])[0]
    deleted = [
        _curve(model, x, zero, r.to(device), index, cls, batch_size) for r in (rank, random_rank)
    ]
    inserted = [  # from the blurred copy towards x: the same steps with the roles swapped
        _curve(model, blur, x, r.to(device), index, cls, batch_size) for r in (rank, random_rank)
    ]
    fraction = np.arange(cells + 1, dtype=np.float64) / cells
    return Curves(fraction, deleted[0], inserted[0], deleted[1], inserted[1], grid)


def default_grid(size: tuple[int, int], cells: int = 14) -> tuple[int, int]:
    """A grid for maps without one of their own (saliency): at most ``cells`` per side."""
    return (min(size[0], cells), min(size[1], cells))


def median(values: np.ndarray) -> float:
    finite = np.asarray(values, dtype=np.float64)
    finite = finite[np.isfinite(finite)]
    return float(np.median(finite)) if len(finite) else math.nan
