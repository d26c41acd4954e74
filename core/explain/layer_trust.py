"""Which layer to trust: the faithfulness of each candidate layer's maps on a fixed sample.

:func:`grad_cam_layers` computes Grad-CAM at many layers from ONE forward and one backward pass
per class (each layer's output is kept and the rest of the network gets a clone, so in-place
operations downstream cannot change what is kept, as in :mod:`core.explain.cam`); it equals
:func:`~core.explain.cam.grad_cam` at each layer. :func:`layer_faithfulness` scores the maps of
every layer with :func:`~core.explain.faithfulness.faithfulness` and reports the median per layer.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from core.explain.hooks import (
    check_eval,
    check_images,
    check_logits,
    get_module,
    hooked,
    spatial_shape,
    to_model,
    wants_channels_last,
)
from core.explain.layers import layout_of

__all__ = ["LayerScore", "grad_cam_layers", "layer_faithfulness", "sample_rows"]


class _Keep:
    """Forward hook: keeps the module's output (graph attached) and hands on a clone."""

    def __init__(self) -> None:
        self.thread = threading.get_ident()
        self.calls = 0
        self.value: Tensor | None = None

    def __call__(self, module: nn.Module, args: tuple[Any, ...], output: Any) -> Tensor | None:
        if threading.get_ident() != self.thread or not isinstance(output, Tensor):
            return None
        self.calls += 1
        if self.calls > 1:
            return None
        self.value = output
        return output.clone()


def grad_cam_layers(
    model: nn.Module,
    images: Tensor,
    classes: Tensor,
    layers: Sequence[str],
    batch_size: int = 16,
) -> dict[str, Tensor]:
    """Grad-CAM maps ``[N, H, W]`` in [0, 1] of class ``classes[i]`` at every layer of
    ``layers``, from one forward and one backward pass per chunk of images."""
    from core.explain.cam import finish_maps

    check_eval(model)
    check_images(images, batch_size)
    cls = torch.as_tensor(classes).long().reshape(-1)
    if len(cls) != len(images):
        raise ValueError(f"classes must be [N] with N={len(images)}")
    modules = [get_module(model, name) for name in layers]
    size = spatial_shape(images)
    out = {name: torch.empty((len(images), *size)) for name in layers}
    channels_last = wants_channels_last(model)
    for start in range(0, len(images), batch_size):
        x = to_model(model, images[start : start + batch_size], channels_last)
        keeps = [_Keep() for _ in modules]
        with torch.inference_mode(False), torch.enable_grad(), hooked(modules, keeps):
            logits = check_logits(model(x), cls[start : start + len(x)])
            score = logits.gather(1, cls[start : start + len(x), None].to(logits.device)).sum()
            values = []
            for name, keep in zip(layers, keeps, strict=True):
                if keep.calls != 1 or keep.value is None:
                    raise ValueError(f"layer {name!r} does not run exactly once per forward")
                values.append(keep.value)
            grads = torch.autograd.grad(score, values, allow_unused=True)
        for name, value, grad in zip(layers, values, grads, strict=True):
            layout = layout_of(model, name, value, x)
            acts = layout.to_spatial(value.detach()).float()
            if grad is None:
                raw = torch.zeros(acts.shape[0], *acts.shape[2:])
            else:
                weights = layout.to_spatial(grad).float().mean((2, 3))
                raw = torch.einsum("nc,nchw->nhw", weights, acts)
            out[name][start : start + len(x)] = finish_maps(raw.cpu(), size)
    return out


@dataclass(frozen=True)
class LayerScore:
    """One layer's faithfulness on a sample: median score of its maps and of random maps of
    the same cells (the baseline), and how many maps."""

    layer: str
    median: float
    random_median: float
    count: int


def sample_rows(n: int, size: int = 64, seed: int = 0) -> np.ndarray:
    """A fixed, seeded sample of ``size`` of ``n`` rows (sorted), the same every time."""
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n, size=min(size, n), replace=False))


def layer_faithfulness(
    model: nn.Module,
    images: Tensor,
    classes: Tensor,
    layers: Sequence[tuple[str, tuple[int, int]]],
    method: str = "Grad-CAM",
    batch_size: int = 16,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
    baseline_images: int = 16,
) -> list[LayerScore]:
    """The faithfulness of each layer's maps of ``classes`` on ``images``: ``layers`` are
    (name, grid) pairs; Grad-CAM maps of all layers come from one pass per chunk, other methods
    are computed layer by layer (a layer where the method does not apply is left out). A layer
    whose maps equal an earlier layer's (a ``Sequential`` and its last module) is scored once;
    the random baseline uses the first ``baseline_images`` images."""
    from core.explain.cam import METHODS
    from core.explain.faithfulness import _probs, faithfulness, random_maps

    names = [name for name, _ in layers]
    cls = torch.as_tensor(classes).long().reshape(-1)
    if method == "Grad-CAM":
        maps = grad_cam_layers(model, images, cls, names, batch_size)
    else:
        maps = {}
        for name in names:
            try:
                maps[name] = METHODS[method](model, images, cls, layer=name)
            except ValueError:  # e.g. CAM at a layer that does not feed the head directly
                continue
        layers = [(name, grid) for name, grid in layers if name in maps]
    before = _probs(model, images, cls, 64).numpy()
    few = slice(0, max(1, baseline_images))
    found: list[LayerScore] = []
    for i, (name, grid) in enumerate(layers):
        same = next((s for s in found if torch.equal(maps[s.layer], maps[name])), None)
        if same is not None:
            found.append(LayerScore(name, same.median, same.random_median, same.count))
        else:
            scores = faithfulness(model, images, maps[name], cls, before=before, keep=False)
            rand = random_maps(maps[name][few], grid, seed)
            baseline = faithfulness(
                model, images[few], rand, cls[few], before=before[few], keep=False
            )
            median, random_median = _median(scores.score), _median(baseline.score)
            found.append(LayerScore(name, median, random_median, len(images)))
        if progress is not None:
            progress(i + 1, len(layers))
    return found


def _median(values: np.ndarray) -> float:
    finite = np.asarray(values, dtype=np.float64).ravel()
    finite = finite[np.isfinite(finite)]
    return float(np.median(finite)) if len(finite) else float("nan")
