"""The model-randomisation sanity check (Adebayo et al., "Sanity Checks for Saliency Maps", 2018).

A map that explains the model must change when the model's weights are destroyed. The check
randomises the weights of a **deep copy** of the model (the shared model is never touched)
cascading from the head down, one stage at a time (the model's top-level blocks in reverse
forward order; a ``ModuleList`` such as a ViT's ``blocks`` counts block by block), recomputes the
maps of the same images and classes after each stage, and reports the Spearman rank correlation
between each image's original and new map (mean over images; a map that became constant counts
as 0). A method **passes** when, with every stage randomised, the correlation is below
``threshold`` (0.5): its maps depend on the weights. Grad-CAM passes, as in the paper; a "map"
that ignores the weights (the input's edge magnitude, say) keeps a correlation of 1 and fails.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from core.explain.hooks import check_eval, hooked, model_param, to_model, wants_channels_last

__all__ = [
    "SanityReport",
    "SanityStage",
    "edge_map",
    "randomisation_stages",
    "sanity_check",
    "spearman",
]

THRESHOLD = 0.5

MapFn = Callable[[nn.Module, Tensor, Tensor, str | None], Tensor]
"""``maps(model, images, classes, layer) -> [N, H, W]`` (a :data:`core.explain.cam.METHODS`
entry fits)."""


@dataclass(frozen=True)
class SanityStage:
    randomised: str  # the stage randomised last (all stages above it are random too)
    spearman: float


@dataclass(frozen=True)
class SanityReport:
    method: str
    layer: str | None
    stages: tuple[SanityStage, ...]
    passes: bool
    threshold: float = THRESHOLD

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "layer": self.layer,
            "stages": [{"randomised": s.randomised, "spearman": s.spearman} for s in self.stages],
            "passes": self.passes,
        }


def randomisation_stages(model: nn.Module, input_shape: tuple[int, ...]) -> list[str]:
    """Names of the model's top-level parameterised blocks, head first (reverse forward order
    from one dry run); the items of a top-level ``ModuleList`` are blocks of their own."""
    check_eval(model)
    blocks: list[tuple[str, nn.Module]] = []
    for name, child in model.named_children():
        if isinstance(child, nn.ModuleList):
            blocks += [(f"{name}.{i}", m) for i, m in enumerate(child)]
        else:
            blocks.append((name, child))
    blocks = [(n, m) for n, m in blocks if any(True for _ in m.parameters())]
    order: list[str] = []
    thread = threading.get_ident()

    def hook_for(name: str) -> Callable[..., None]:
        def hook(module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
            if threading.get_ident() == thread and name not in order:
                order.append(name)

        return hook

    param = model_param(model)
    zeros = torch.zeros((1, *input_shape[-3:]), device=param.device if param is not None else None)
    with torch.no_grad(), hooked([m for _, m in blocks], [hook_for(n) for n, _ in blocks]):
        model(to_model(model, zeros, wants_channels_last(model)))
    unused = [n for n, _ in blocks if n not in order]  # e.g. parameters only used elsewhere
    return list(reversed(order)) + unused


def _randomise(module: nn.Module, generator: torch.Generator) -> None:
    """Re-draw every parameter of ``module``: weights from N(0, std of the weights), biases and
    norm shifts from N(0, 0.1) scaled likewise, so nothing learned survives."""
    with torch.no_grad():
        for param in module.parameters():
            std = float(param.float().std()) if param.numel() > 1 else 0.0
            std = std if std > 0 else 0.05
            noise = torch.randn(param.shape, generator=generator) * std
            param.copy_(noise.to(param.device, param.dtype))


def spearman(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Spearman rank correlation of each row of ``a`` with the same row of ``b`` ([N, P]),
    ties given their average rank; 0 where a row is constant."""
    from scipy.stats import rankdata

    ra = rankdata(a, axis=1)
    rb = rankdata(b, axis=1)
    ra -= ra.mean(1, keepdims=True)
    rb -= rb.mean(1, keepdims=True)
    denom = np.sqrt((ra**2).sum(1) * (rb**2).sum(1))
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = (ra * rb).sum(1) / denom
    return np.where(denom > 0, rho, 0.0)


def sanity_check(
    model: nn.Module,
    images: Tensor,
    classes: Tensor,
    maps: MapFn,
    method: str,
    layer: str | None,
    seed: int = 0,
    threshold: float = THRESHOLD,
    input_shape: tuple[int, ...] | None = None,
) -> SanityReport:
    """Adebayo's cascading model randomisation on a deep copy of ``model``: see the module
    docstring. ``maps`` computes the maps; ``classes`` are kept fixed across stages."""
    check_eval(model)
    shape = input_shape or tuple(images.shape[1:])
    stages = randomisation_stages(model, shape)
    original = maps(model, images, classes, layer).reshape(len(images), -1).cpu().numpy()
    copy_ = copy.deepcopy(model)
    for module in copy_.modules():  # hooks of other calls copied with the model: not ours
        module._forward_hooks.clear()
        module._forward_pre_hooks.clear()
    copy_.eval()
    generator = torch.Generator().manual_seed(seed)
    found = []
    for name in stages:
        _randomise(copy_.get_submodule(name), generator)
        new = maps(copy_, images, classes, layer).reshape(len(images), -1).cpu().numpy()
        found.append(SanityStage(name, float(np.mean(spearman(original, new)))))
    passes = bool(found) and found[-1].spearman < threshold
    return SanityReport(method, layer, tuple(found), passes, threshold)


def edge_map(model: nn.Module, images: Tensor, classes: Tensor, layer: str | None) -> Tensor:
    """A "map" that ignores the model: the input's Sobel edge magnitude, min-max per image (the
    control that must fail the check)."""
    gray = images.float().mean(1, keepdim=True)
    kx = torch.tensor([[-1.0, 0, 1], [-2, 0, 2], [-1, 0, 1]])[None, None]
    gx = torch.nn.functional.conv2d(gray, kx, padding=1)
    gy = torch.nn.functional.conv2d(gray, kx.transpose(2, 3), padding=1)
    mag = (gx**2 + gy**2).sqrt()[:, 0]
    flat = mag.flatten(1)
    flat = flat - flat.amin(1, keepdim=True)
    return (flat / flat.amax(1, keepdim=True).clamp_min(1e-7)).view_as(mag)
