"""Which layers can give a map, and how their outputs become spatial maps.

:func:`candidate_layers` lists every module whose output is a spatial map (convolutional maps,
channels-last maps, transformer token grids), from one dry run; :func:`find_target_layer` picks
the one pytorch-grad-cam's recipes use; :class:`Layout` is the one place where a layer's output is
reshaped to ``[B, C, h, w]``, used by every map method.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from core.explain.hooks import (
    check_eval,
    get_module,
    hooked,
    model_param,
    spatial_shape,
    to_model,
    wants_channels_last,
)

__all__ = [
    "LayerInfo",
    "Layout",
    "candidate_layers",
    "find_target_layer",
    "layout_of",
    "resolve_layer",
]


@dataclass(frozen=True)
class LayerInfo:
    """A module whose output is a spatial map: dotted name, class name, map shape (C, H, W) of one
    image, and how the output is laid out ("map" [B, C, H, W], "channels_last" [B, H, W, C] or
    "tokens" [B, prefix + H*W, C]; see ``Layout``)."""

    name: str
    type_name: str
    shape: tuple[int, ...]
    layout: str = "map"


# --------------------------------------------------------------------------- layer layouts


@dataclass(frozen=True)
class Layout:
    """How one layer's output [B, ...] becomes a spatial map [B, C, h, w]: the ONE place where
    transformer outputs are reshaped, used by every method, ``evaluation_maps``,
    ``layer_activations`` and ``candidate_layers``.

    ``map``: already [B, C, h, w]. ``channels_last``: [B, h, w, C] (torchvision Swin), permuted.
    ``tokens``: [B, prefix + h*w, C] (ViT, DeiT, register tokens): the ``prefix`` class /
    distillation / register tokens are dropped and the rest is read as an h×w grid, row-major
    (pytorch-grad-cam's ``reshape_transform``). Returns views, never copies.
    """

    kind: str
    grid: tuple[int, int]
    channels: int
    prefix: int = 0

    def to_spatial(self, t: Tensor) -> Tensor:
        if self.kind == "channels_last":
            return t.permute(0, 3, 1, 2)
        if self.kind == "tokens":
            return t[:, self.prefix :].unflatten(1, self.grid).permute(0, 3, 1, 2)
        return t

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.channels, *self.grid)


def _plausible_grid(grid: Sequence[int], size: tuple[int, int]) -> bool:
    """Whether an h×w grid can be a map of an H×W input: no larger, about equal strides."""
    (h, w), (height, width) = grid, size
    if not (0 < h <= height and 0 < w <= width):
        return False
    strides = (height / h, width / w)
    return max(strides) <= 1.5 * min(strides)


def _patch_size(model: nn.Module) -> tuple[int, int] | None:
    """A ViT's patch size: timm's ``patch_embed.patch_size`` or torchvision's ``patch_size``."""
    size = getattr(getattr(model, "patch_embed", None), "patch_size", None)
    size = size if size is not None else getattr(model, "patch_size", None)
    if isinstance(size, int):
        return size, size
    if isinstance(size, Sequence) and len(size) == 2 and all(isinstance(s, int) for s in size):
        return int(size[0]), int(size[1])
    return None


def _prefix_tokens(model: nn.Module) -> int | None:
    """timm's ``num_prefix_tokens``; 1 for torchvision's ViT (its ``class_token``)."""
    prefix = getattr(model, "num_prefix_tokens", None)
    if isinstance(prefix, int):
        return prefix
    return 1 if isinstance(getattr(model, "class_token", None), Tensor) else None


def _token_grid(model: nn.Module, n: int, size: tuple[int, int]) -> tuple[int, int, int] | None:
    """(h, w, prefix) of ``n`` tokens of an H×W input, or None if they are not a patch grid.

    The grid comes from the model's patch size (floor, or ceil for padded patch embeddings);
    without one, the smallest prefix whose remaining count is a grid of the input's aspect ratio.
    """
    known = _prefix_tokens(model)
    patch = _patch_size(model)
    if patch is not None:
        for rnd in (lambda a, b: a // b, lambda a, b: -(-a // b)):
            h, w = rnd(size[0], patch[0]), rnd(size[1], patch[1])
            prefix = n - h * w
            if h > 0 and w > 0 and prefix >= 0 and known in (None, prefix):
                return h, w, prefix
        return None
    for prefix in [known] if known is not None else range(min(n, 17)):
        h = round((max(n - prefix, 0) * size[0] / size[1]) ** 0.5)
        if h > 0 and (n - prefix) % h == 0 and h * size[1] == (n - prefix) // h * size[0]:
            return h, (n - prefix) // h, prefix
    return None


def _layout(model: nn.Module, shape: Sequence[int], size: tuple[int, int]) -> Layout | None:
    """The layout of a layer output of one-image ``shape`` (no batch dim) at input size H×W."""
    if len(shape) == 3:
        c, h, w = (int(s) for s in shape)
        if _plausible_grid((h, w), size) or not _plausible_grid((c, h), size):
            return Layout("map", (h, w), c)
        return Layout("channels_last", (c, h), w)
    if len(shape) == 2:
        grid = _token_grid(model, int(shape[0]), size)
        if grid is not None:
            return Layout("tokens", grid[:2], int(shape[1]), grid[2])
    return None


def layout_of(model: nn.Module, name: str, value: Tensor, x: Tensor) -> Layout:
    """The layout of a layer's output ``value`` in the forward of model input ``x``; raises if
    the output cannot be read as a spatial map of those images."""
    same_batch = value.dim() > 0 and value.shape[0] == x.shape[0]
    layout = _layout(model, value.shape[1:], spatial_shape(x)) if same_batch else None
    if layout is None:
        raise ValueError(
            f"layer {name!r} output has shape {tuple(value.shape)}: not a spatial map "
            "[N, C, H, W], a channels-last map [N, H, W, C] or a token grid [N, prefix + H*W, C] "
            "for this input size; choose another layer"
        )
    return layout


# --------------------------------------------------------------------------- layer detection


@dataclass
class _Record:
    name: str
    type_name: str
    shape: tuple[int, ...] | None
    calls: int = 0


def _trace(model: nn.Module, input_shape: Sequence[int]) -> list[_Record]:
    """Records of every non-root module in forward-completion order, from one dry run on zeros."""
    check_eval(model)
    shape = tuple(int(s) for s in input_shape)
    shape = shape[1:] if len(shape) == 4 else shape
    if len(shape) != 3:
        raise ValueError(f"input_shape must be (C, H, W) or (N, C, H, W), got {tuple(input_shape)}")
    order: list[_Record] = []
    thread = threading.get_ident()
    named = [(n, m) for n, m in model.named_modules() if n]
    records = {id(m): _Record(n, type(m).__name__, None) for n, m in named}

    def record(module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
        if threading.get_ident() != thread:
            return
        rec = records[id(module)]
        rec.calls += 1
        if rec.calls == 1:  # one image's shape; None unless the batch dim is the images'
            one = isinstance(output, Tensor) and output.dim() > 0 and output.shape[0] == 1
            rec.shape = tuple(output.shape[1:]) if one else None
            order.append(rec)

    param = model_param(model)
    zeros = torch.zeros((1, *shape), device=param.device if param is not None else None)
    zeros = to_model(model, zeros, wants_channels_last(model))
    with (
        torch.inference_mode(False),
        torch.no_grad(),
        hooked([m for _, m in named], [record] * len(named)),
    ):
        model(zeros)
    return order


def candidate_layers(model: nn.Module, input_shape: Sequence[int]) -> list[LayerInfo]:
    """Every module (run once per forward) whose output is a spatial map: 4-D maps,
    channels-last maps and token grids (shape given as their map's (C, h, w)), in
    forward-completion order."""
    size = (int(input_shape[-2]), int(input_shape[-1]))
    found = []
    for rec in _trace(model, input_shape):
        layout = _layout(model, rec.shape, size) if rec.shape and rec.calls == 1 else None
        if layout is not None:
            found.append(LayerInfo(rec.name, rec.type_name, layout.shape, layout.kind))
    return found


# torchvision EncoderBlock; timm Block / torchvision Swin block; transformers' ViT, DeiT, BEiT and
# Swin layers
_FIRST_NORMS = ("ln_1", "norm1", "layernorm_before")


def find_target_layer(model: nn.Module, input_shape: Sequence[int]) -> str:
    """The layer pytorch-grad-cam's recipes use, found from one dry run.

    Transformers (token or channels-last outputs): the last block's first norm,
    ``encoder.layers[-1].ln_1`` (torchvision ViT), ``blocks[-1].norm1`` (timm ViT / DeiT), the
    last Swin block's ``norm1``, transformers' ``vit.layers[-1].layernorm_before`` (ViT, DeiT,
    BEiT) and the last Swin block's ``layernorm_before``. After it the class token reaches the
    patch tokens only through attention, so later layers get no gradient on patch tokens.
    Otherwise: the last module to finish whose map has H > 1 and W > 1, skipping pooling and
    identity layers and modules that run more than once per forward (e.g. ResNet's shared
    ``relu``): ``layer4`` for ResNets, ``features`` for VGG, MobileNet, EfficientNet, DenseNet
    and ConvNeXt, the last stage (``encoder.stages[-1]``) of transformers' ConvNeXt and ResNet.
    """
    layers = candidate_layers(model, input_shape)
    norms = [i for i in layers if i.layout != "map" and i.name.rsplit(".", 1)[-1] in _FIRST_NORMS]
    if norms:
        return norms[-1].name
    for info in reversed(layers):
        skip = "Pool" in info.type_name or info.type_name == "Identity"
        if not skip and info.shape[1] > 1 and info.shape[2] > 1:
            return info.name
    raise ValueError("no module with a spatial (H>1, W>1) output; pass layer= explicitly")


def resolve_layer(model: nn.Module, images: Tensor, layer: str | None) -> tuple[str, nn.Module]:
    name = layer if layer is not None else find_target_layer(model, images.shape[1:])
    return name, get_module(model, name)
