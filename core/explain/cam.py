"""Class activation maps for PyTorch image classifiers: Grad-CAM, Grad-CAM++, CAM and saliency.

Every map method takes ``(model, images, classes, layer=None, batch_size=64)`` and returns float32
maps in [0, 1] at input resolution: ``[N, H, W]`` for ``classes`` of shape ``[N]`` (or a Python
int), ``[N, K, H, W]`` for ``[N, K]``. Scores are raw logits. Normalisation follows
pytorch-grad-cam exactly: ReLU, per-map min-max at layer resolution (eps 1e-7), bilinear resize
(half-pixel centres), min-max again.

Speed: the forward runs under ``torch.no_grad()``. A per-call forward hook on the target layer
switches grad mode on (grad mode is thread-local) and hands the rest of the network a clone of a
fresh leaf tensor, so autograd records only the part of the network after the target layer, and
one forward pass serves all K classes of a chunk. Gradients are taken with
``torch.autograd.grad(..., inputs=leaf)``, so parameters' ``.grad`` never changes. The clone also
absorbs in-place operations applied to the layer output afterwards (DenseNet's
``F.relu(features, inplace=True)``, a ResNet block's ``out += identity``), so the activations used
are the layer's true output — the values captum's ``LayerGradCam`` uses. pytorch-grad-cam instead
weights the in-place-modified values and differs at such layers.

Global-average-pool + Linear heads (ResNets, EfficientNets, the digits sample): when the forward
shows that the last Linear ran once on the spatial mean of the layer and gave the model output,
the gradient of class k is ``W[k] / (h * w)`` at every position, so no backward pass runs (the
identity behind "Grad-CAM equals CAM" on such models). Any other head, or a check that fails on
a chunk, takes the autograd path; the tests run both paths against each other. The check compares
values, so it cannot see an operation that leaves these values unchanged but not their gradient,
such as a second ReLU applied to a ReLU layer's output: there the shortcut counts positions where
the layer is exactly zero as autograd would not (ReLU's gradient at 0 is taken as 0).

Thread safety: hooks live only for one call and act only in the thread that registered them, so
concurrent calls on one shared model (one per dashboard session) do not see each other.
"""

from __future__ import annotations

import difflib
import functools
import threading
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor, nn

__all__ = [
    "METHODS",
    "CamMethod",
    "LayerActivations",
    "LayerInfo",
    "cam",
    "candidate_layers",
    "evaluation_maps",
    "find_target_layer",
    "finish_maps",
    "grad_cam",
    "grad_cam_pp",
    "layer_activations",
    "saliency",
]

_EPS = 1e-7  # pytorch-grad-cam's min-max epsilon
_PP_EPS = 1e-6  # pytorch-grad-cam's Grad-CAM++ denominator epsilon

# torch's ``RemovableHandle`` takes its id from a class counter with ``next_id += 1``, which is not
# atomic: two threads registering at the same moment can get the same id, and then one hook
# overwrites the other in the module's hook dict. Our registrations are serialised by this lock.
_REGISTER_LOCK = threading.Lock()

Classes = int | Tensor | Sequence[int]


@dataclass(frozen=True)
class LayerInfo:
    """A module whose output is a spatial map: dotted name, class name, map shape (C, H, W) of one
    image, and how the output is laid out ("map" [B, C, H, W], "channels_last" [B, H, W, C] or
    "tokens" [B, prefix + H*W, C]; see ``_Layout``)."""

    name: str
    type_name: str
    shape: tuple[int, ...]
    layout: str = "map"


@dataclass(frozen=True)
class LayerActivations:
    """Top channels of one layer for one image, by mean activation (descending)."""

    layer: str
    channels: Tensor  # int64 [k] channel indices
    means: Tensor  # float32 [k] spatial mean of each channel
    maps: Tensor  # float32 [k, h, w], each channel min-max scaled to [0, 1]


class CamMethod(Protocol):
    """Signature shared by the entries of ``METHODS``."""

    def __call__(
        self,
        model: nn.Module,
        images: Tensor,
        classes: Classes,
        layer: str | None = None,
        batch_size: int = 64,
    ) -> Tensor: ...


# --------------------------------------------------------------------------- hooks


class _Tap:
    """Per-call forward hook: captures a module's output, only in the thread that created it.

    torch's ``Module._call_impl`` iterates a tuple snapshot of the hook dicts
    (``(*_global_forward_hooks.items(), *self._forward_hooks.items())``), built in C while holding
    the GIL, so another thread registering or removing its hook mid-forward cannot break this
    thread's iteration (registering and removing are single dict operations, and a handle is
    removed only by the call that made it). The snapshot may still contain another call's hook, or
    one removed just after the snapshot was taken, which is why a tap does nothing outside its
    owning thread; all per-call state lives on the tap, never on the module.

    With ``grad=True`` the tap turns grad mode on (thread-local) and replaces the output with a
    clone of a fresh leaf: autograd then records only the rest of the forward. The clone absorbs
    later in-place operations, so ``value`` keeps the layer's true output. With
    ``replace=False`` it only keeps copies of the module's input and output.
    """

    def __init__(self, grad: bool = False, keep_input: bool = False, replace: bool = True) -> None:
        self.thread = threading.get_ident()
        self.grad = grad
        self.keep_input = keep_input
        self.replace = replace
        self.calls = 0
        self.value: Tensor | None = None
        self.input: Tensor | None = None

    def __call__(self, module: nn.Module, args: tuple[Any, ...], output: Any) -> Tensor | None:
        if threading.get_ident() != self.thread:
            return None
        self.calls += 1
        if self.calls > 1 or not isinstance(output, Tensor):
            return None  # reported by checked_value after the forward
        if self.keep_input and args and isinstance(args[0], Tensor):
            self.input = args[0].detach().clone()
        if not self.replace:  # observe only: copies, so later in-place ops cannot change them
            self.value = output.detach().clone()
            return None
        if self.grad:
            torch.set_grad_enabled(True)
        self.value = output.detach().requires_grad_(self.grad)
        return self.value.clone()

    def checked_value(self, name: str) -> Tensor:
        """The captured output; raises if the module did not run exactly once."""
        if self.calls != 1:
            raise ValueError(
                f"layer {name!r} ran {self.calls} times in one forward pass; "
                "choose a module that runs exactly once (e.g. not a shared activation)"
            )
        if self.value is None:
            raise ValueError(f"layer {name!r} does not return a single tensor")
        return self.value


@contextmanager
def _hooked(modules: Sequence[nn.Module], hooks: Sequence[Callable[..., Any]]) -> Iterator[None]:
    """Register forward hooks for the duration of a block; always removed, also on errors."""
    handles = []
    try:
        for module, hook in zip(modules, hooks, strict=True):
            with _REGISTER_LOCK:
                handles.append(module.register_forward_hook(hook))
        yield
    finally:
        for handle in handles:
            handle.remove()


# --------------------------------------------------------------------------- checks and inputs


def _check_eval(model: nn.Module) -> None:
    if not any(m.training for m in model.modules()):
        return
    training = [name or type(model).__name__ for name, m in model.named_modules() if m.training]
    raise ValueError(
        f"model is in training mode ({', '.join(training[:3])}); call model.eval() first: "
        "in train mode BatchNorm makes each map depend on its batch and updates running stats"
    )


def _get_module(model: nn.Module, name: str) -> nn.Module:
    if name:
        try:
            return model.get_submodule(name)
        except AttributeError:
            pass  # explained below
    modules: dict[str, nn.Module] = dict(model.named_modules())
    if name in modules and name != "":
        return modules[name]
    names = [n for n in modules if n]
    close = difflib.get_close_matches(name, names, n=5) or names[-5:]
    raise ValueError(f"unknown layer {name!r}; valid names include: {', '.join(close)}")


def _model_param(model: nn.Module) -> Tensor | None:
    return next((p for p in model.parameters() if p.is_floating_point()), None)


def _wants_channels_last(model: nn.Module) -> bool:
    conv = next((p for p in model.parameters() if p.dim() == 4), None)
    return (
        conv is not None
        and conv.is_contiguous(memory_format=torch.channels_last)
        and not conv.is_contiguous()
    )


def _to_model(model: nn.Module, x: Tensor, channels_last: bool) -> Tensor:
    param = _model_param(model)
    if param is not None:
        x = x.to(device=param.device, dtype=param.dtype)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def _check_images(images: Tensor, batch_size: int) -> None:
    if not isinstance(images, Tensor) or images.dim() != 4 or not images.is_floating_point():
        raise ValueError("images must be a float tensor [N, C, H, W]")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")


def _class_matrix(classes: Classes, n: int) -> tuple[Tensor, bool]:
    """Classes as an int64 [N, K] tensor, and whether the caller asked for [N, K]."""
    if isinstance(classes, int):
        return torch.full((n, 1), classes, dtype=torch.long), False
    cls = torch.as_tensor(classes).cpu()
    if cls.is_floating_point() or cls.is_complex() or cls.dim() not in (1, 2) or len(cls) != n:
        raise ValueError(f"classes must be an int or an integer tensor [N] or [N, K] with N={n}")
    return (cls.long()[:, None], False) if cls.dim() == 1 else (cls.long(), True)


def _check_logits(logits: Any, cls: Tensor) -> Tensor:
    if not isinstance(logits, Tensor) or logits.dim() != 2:
        raise ValueError("the model must return a logits tensor [N, num_classes]")
    if cls.numel() and (int(cls.min()) < 0 or int(cls.max()) >= logits.shape[1]):
        raise ValueError(f"class indices must lie in [0, {logits.shape[1]})")
    return logits


def _spatial_shape(images: Tensor) -> tuple[int, int]:
    return int(images.shape[-2]), int(images.shape[-1])


# --------------------------------------------------------------------------- normalisation


def _minmax_(maps: Tensor) -> Tensor:
    """Per-map ``x - min; x / (1e-7 + max)`` over the last two dims, in place."""
    flat = maps.view(*maps.shape[:-2], -1)
    flat.sub_(flat.amin(-1, keepdim=True))
    flat.div_(flat.amax(-1, keepdim=True).add_(_EPS))
    return maps


def _resize_matrix(n_in: int, n_out: int) -> np.ndarray:
    """1-D bilinear resize with half-pixel centres as an [n_out, n_in] matrix.

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


@dataclass(frozen=True)
class _Resizer:
    """pytorch-grad-cam's normalisation from one map size to the input size: ReLU, min-max at map
    resolution (eps 1e-7), bilinear resize (two small matrix products), min-max again."""

    wy: Tensor  # [H, h]
    wx_t: Tensor  # [w, W]

    @classmethod
    @functools.lru_cache(maxsize=64)  # read-only tensors: shared safely between threads
    def build(cls, src: tuple[int, int], dst: tuple[int, int], device: torch.device) -> _Resizer:
        def tensor(a: np.ndarray) -> Tensor:
            return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)).to(device)

        return cls(tensor(_resize_matrix(src[0], dst[0])), tensor(_resize_matrix(src[1], dst[1]).T))

    def __call__(self, raw: Tensor, out: Tensor) -> Tensor:
        """Normalise raw maps [M, h, w] into ``out`` [M, H, W]."""
        maps = _minmax_(raw.float().clamp_min(0))
        return _minmax_(torch.matmul(self.wy, maps @ self.wx_t, out=out))


def _weighted_maps(weights: Tensor, acts: Tensor) -> Tensor:
    """sum_c weights[n, k, c] * acts[n, c, h, w] -> [n, k, h, w].

    ``acts.flatten(2)`` is a view in both memory formats (channels_last reads as a transposed
    matrix), so no copy of the activations is made.
    """
    return torch.bmm(weights, acts.flatten(2)).view(*weights.shape[:2], *acts.shape[2:])


def _grad_cam_weights(acts: Tensor, grad: Tensor) -> Tensor:
    """Grad-CAM channel weights [n, C]: the spatial mean of the gradient."""
    return grad.mean((2, 3))


def _grad_cam_pp_weights(acts: Tensor, grad: Tensor) -> Tensor:
    """Grad-CAM++ channel weights [n, C], as pytorch-grad-cam computes them."""
    g2 = grad.pow(2)
    sum_acts = acts.sum((2, 3), keepdim=True)
    aij = g2 / (2 * g2 + sum_acts * (g2 * grad) + _PP_EPS)
    aij = torch.where(grad != 0, aij, torch.zeros_like(aij))
    return (grad.clamp_min(0) * aij).sum((2, 3))


def _maps_into(out: Tensor, weights: Tensor, acts: Tensor, resizer: _Resizer | None) -> _Resizer:
    """Write the normalised maps of one chunk into ``out`` [n, K, H, W]; returns the resizer."""
    if resizer is None:
        src, dst = (
            (int(acts.shape[-2]), int(acts.shape[-1])),
            (int(out.shape[-2]), int(out.shape[-1])),
        )
        resizer = _Resizer.build(src, dst, acts.device)
    same_device = out.device == acts.device
    target = out if same_device else torch.empty(out.shape, device=acts.device)
    resizer(_weighted_maps(weights, acts).flatten(0, 1), target.view(-1, *out.shape[-2:]))
    if not same_device:
        out.copy_(target)
    return resizer


# --------------------------------------------------------------------------- layer layouts


@dataclass(frozen=True)
class _Layout:
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


def _layout(model: nn.Module, shape: Sequence[int], size: tuple[int, int]) -> _Layout | None:
    """The layout of a layer output of one-image ``shape`` (no batch dim) at input size H×W."""
    if len(shape) == 3:
        c, h, w = (int(s) for s in shape)
        if _plausible_grid((h, w), size) or not _plausible_grid((c, h), size):
            return _Layout("map", (h, w), c)
        return _Layout("channels_last", (c, h), w)
    if len(shape) == 2:
        grid = _token_grid(model, int(shape[0]), size)
        if grid is not None:
            return _Layout("tokens", grid[:2], int(shape[1]), grid[2])
    return None


def _layout_of(model: nn.Module, name: str, value: Tensor, x: Tensor) -> _Layout:
    """The layout of a layer's output ``value`` in the forward of model input ``x``; raises if
    the output cannot be read as a spatial map of those images."""
    same_batch = value.dim() > 0 and value.shape[0] == x.shape[0]
    layout = _layout(model, value.shape[1:], _spatial_shape(x)) if same_batch else None
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
    _check_eval(model)
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

    param = _model_param(model)
    zeros = torch.zeros((1, *shape), device=param.device if param is not None else None)
    zeros = _to_model(model, zeros, _wants_channels_last(model))
    with (
        torch.inference_mode(False),
        torch.no_grad(),
        _hooked([m for _, m in named], [record] * len(named)),
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


_FIRST_NORMS = ("ln_1", "norm1")  # torchvision EncoderBlock, timm Block / torchvision Swin block


def find_target_layer(model: nn.Module, input_shape: Sequence[int]) -> str:
    """The layer pytorch-grad-cam's recipes use, found from one dry run.

    Transformers (token or channels-last outputs): the last block's first norm,
    ``encoder.layers[-1].ln_1`` (torchvision ViT), ``blocks[-1].norm1`` (timm ViT / DeiT), the
    last Swin block's ``norm1``. After it the class token reaches the patch tokens only through
    attention, so later layers get no gradient on patch tokens. Otherwise: the last module to
    finish whose map has H > 1 and W > 1, skipping pooling and identity layers and modules that
    run more than once per forward (e.g. ResNet's shared ``relu``): ``layer4`` for ResNets,
    ``features`` for VGG, MobileNet, EfficientNet, DenseNet and ConvNeXt.
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


def _resolve_layer(model: nn.Module, images: Tensor, layer: str | None) -> tuple[str, nn.Module]:
    name = layer if layer is not None else find_target_layer(model, images.shape[1:])
    return name, _get_module(model, name)


def _warn_if_pointlike(acts: Tensor, name: str, stacklevel: int) -> None:
    if acts.shape[-2] * acts.shape[-1] == 1:
        warnings.warn(
            f"layer {name!r} has a 1x1 feature map at this input size: the map carries no "
            "location information; choose a shallower layer",
            stacklevel=stacklevel + 1,
        )


# --------------------------------------------------------------------------- gradient methods


def _chunk_grads(
    model: nn.Module,
    module: nn.Module,
    name: str,
    x: Tensor,
    classes: Tensor | Callable[[Tensor], Tensor],
) -> tuple[Tensor, Tensor, list[Tensor], Tensor]:
    """One forward with the graph from ``module`` on, then the gradient of each class column.

    ``classes`` is an int64 [n, K] tensor, or a function that picks it from this forward's
    (detached) logits. Returns (detached logits, activations [n, C, h, w], one gradient per
    column, the classes used). When the forward shows that the logits are the last Linear applied
    to the spatial mean of the layer (a global-average-pool + Linear head, as in ResNets), the
    gradient of class k is ``W[k] / (h * w)`` at every position and no backward pass is needed;
    otherwise autograd computes one gradient per column.
    """
    tap = _Tap(grad=True)
    linear = _last_linear(model)
    head = _Tap(keep_input=True, replace=False)
    modules, taps = ([module, linear[1]], [tap, head]) if linear else ([module], [tap])
    with torch.inference_mode(False):  # the caller may be in inference mode or no_grad
        with torch.no_grad(), _hooked(modules, taps):
            logits = model(x)
        leaf = tap.checked_value(name)
        layout = _layout_of(model, name, leaf, x)
        if isinstance(logits, Tensor) and callable(classes):
            classes = classes(logits.detach())
        cls = classes if isinstance(classes, Tensor) else torch.empty(0, 1, dtype=torch.long)
        logits = _check_logits(logits, cls)
        if not logits.requires_grad:
            raise ValueError(f"the model output does not depend on layer {name!r}")
        acts = layout.to_spatial(leaf.detach()).float()
        # never with prefix tokens: a class-token head is not a spatial mean, whatever the values
        if linear and layout.prefix == 0 and _is_gap_linear(acts, head, logits):
            return logits.detach(), acts, _gap_linear_grads(linear[1], acts, cls), cls
        with torch.enable_grad():
            grads = _class_grads(logits, cls, leaf)
    if any(g is None for g in grads):
        raise ValueError(f"the model output does not depend on layer {name!r}")
    spatial = [layout.to_spatial(g).float() for g in grads if g is not None]
    return logits.detach(), acts, spatial, cls


def _is_gap_linear(acts: Tensor, head: _Tap, logits: Tensor) -> bool:
    """Whether the logits are the last Linear applied to the spatial mean of ``acts``."""
    return _gap_linear_problem(acts, head, logits, ("", "")) is None


def _gap_linear_grads(linear: nn.Linear, acts: Tensor, cls: Tensor) -> list[Tensor]:
    """d logits[:, k] / d acts for logits = linear(acts.mean((2, 3))): W[k] / (h * w) everywhere."""
    weight = linear.weight.detach().float().to(acts.device) / (acts.shape[2] * acts.shape[3])
    rows = weight[cls.to(acts.device)]  # [n, K, C]
    return [rows[:, k, :, None, None].expand(acts.shape) for k in range(cls.shape[1])]


def _class_grads(logits: Tensor, cls: Tensor, wrt: Tensor) -> list[Tensor | None]:
    """d(sum of logits[i, cls[i, k]]) / d wrt for every column k (samples are independent)."""
    if not logits.requires_grad:
        return [None]
    cls = cls.to(logits.device).clone()  # a normal tensor even if made in inference mode
    grads: list[Tensor | None] = []
    for k in range(cls.shape[1]):
        score = logits.gather(1, cls[:, k : k + 1]).sum()
        last = k == cls.shape[1] - 1
        grads.append(torch.autograd.grad(score, wrt, retain_graph=not last, allow_unused=True)[0])
    return grads


def _gradient_method(
    weight_fn: Callable[[Tensor, Tensor], Tensor],
    model: nn.Module,
    images: Tensor,
    classes: Classes,
    layer: str | None,
    batch_size: int,
) -> Tensor:
    _check_eval(model)
    _check_images(images, batch_size)
    cls, keep_k = _class_matrix(classes, len(images))
    name, module = _resolve_layer(model, images, layer)
    size = _spatial_shape(images)
    n, k = cls.shape
    out = torch.empty((n, k, *size), dtype=torch.float32, device=images.device)
    channels_last = _wants_channels_last(model)
    resizer = None
    for start in range(0, n, batch_size):
        stop = min(start + batch_size, n)
        x = _to_model(model, images[start:stop], channels_last)
        _, acts, grads, _ = _chunk_grads(model, module, name, x, cls[start:stop])
        if start == 0:
            _warn_if_pointlike(acts, name, stacklevel=3)  # the caller of grad_cam(_pp)
        weights = torch.stack([weight_fn(acts, g) for g in grads], 1)
        resizer = _maps_into(out[start:stop], weights, acts, resizer)
    return out if keep_k else out[:, 0]


def grad_cam(
    model: nn.Module,
    images: Tensor,
    classes: Classes,
    layer: str | None = None,
    batch_size: int = 64,
) -> Tensor:
    """Grad-CAM maps in [0, 1] at input size; one forward per chunk for all K classes."""
    return _gradient_method(_grad_cam_weights, model, images, classes, layer, batch_size)


def grad_cam_pp(
    model: nn.Module,
    images: Tensor,
    classes: Classes,
    layer: str | None = None,
    batch_size: int = 64,
) -> Tensor:
    """Grad-CAM++ maps (pytorch-grad-cam's weighting) in [0, 1] at input size."""
    return _gradient_method(_grad_cam_pp_weights, model, images, classes, layer, batch_size)


# --------------------------------------------------------------------------- evaluation pass


def _display_classes(logits: Tensor, labels: Tensor) -> Tensor:
    """[n, 2] class pairs the gallery shows: (predicted, true), or (predicted, runner-up) where
    the prediction is right (the runner-up is the predicted class itself for one-class models)."""
    pred = logits.argmax(1)
    labels = labels.to(pred.device)
    if logits.shape[1] < 2:
        return torch.stack([pred, labels], 1).cpu()
    runner_up = logits.scatter(1, pred[:, None], float("-inf")).argmax(1)
    return torch.stack([pred, torch.where(labels == pred, runner_up, labels)], 1).cpu()


def _check_labels(labels: Tensor, n: int) -> Tensor:
    labels = torch.as_tensor(labels)
    if labels.is_floating_point() or labels.is_complex() or labels.shape != (n,):
        raise ValueError(f"labels must be an integer tensor [N] with N={n}")
    return labels.long().cpu()


def evaluation_maps(
    model: nn.Module, images: Tensor, labels: Tensor, layer: str | None = None
) -> tuple[Tensor, Tensor]:
    """Logits and raw Grad-CAM maps for the gallery's two classes, from ONE forward pass.

    ``images`` is already normalised model input [N, C, H, W] (one chunk: the caller batches).
    Returns logits [N, K] float32 and raw Grad-CAM [N, 2, h, w] float32 at the target layer's
    resolution, before ReLU and min-max, for the classes (predicted, true label), or (predicted,
    runner-up) where the prediction equals the label. The classes are chosen from this forward's
    logits. ``finish_maps(raw, (H, W))`` gives exactly what :func:`grad_cam` returns for them.
    Both tensors are on ``images``' device.
    """
    _check_eval(model)
    _check_images(images, 1)
    label_tensor = _check_labels(labels, len(images))
    name, module = _resolve_layer(model, images, layer)
    x = _to_model(model, images, _wants_channels_last(model))
    logits, acts, grads, _ = _chunk_grads(
        model, module, name, x, functools.partial(_display_classes, labels=label_tensor)
    )
    _warn_if_pointlike(acts, name, stacklevel=2)
    weights = torch.stack([_grad_cam_weights(acts, g) for g in grads], 1)
    raw = _weighted_maps(weights, acts)
    return logits.float().to(images.device), raw.float().to(images.device)


def finish_maps(raw: Tensor, size: tuple[int, int]) -> Tensor:
    """Display normalisation of raw maps [..., h, w] -> float32 [..., H, W] in [0, 1].

    ReLU, per-map min-max (eps 1e-7), bilinear resize to ``size`` (half-pixel centres), min-max
    again: exactly what :func:`grad_cam` does after weighting.
    """
    if not isinstance(raw, Tensor) or raw.dim() < 2 or not raw.is_floating_point():
        raise ValueError("raw maps must be a float tensor [..., h, w]")
    height, width = (int(s) for s in size)
    if height < 1 or width < 1:
        raise ValueError(f"size must be two positive integers, got {tuple(size)}")
    src = (int(raw.shape[-2]), int(raw.shape[-1]))
    out = torch.empty((*raw.shape[:-2], height, width), dtype=torch.float32, device=raw.device)
    if out.numel() == 0:
        return out
    resizer = _Resizer.build(src, (height, width), raw.device)
    resizer(raw.reshape(-1, *src), out.view(-1, height, width))
    return out


# --------------------------------------------------------------------------- classic CAM


def _last_linear(model: nn.Module) -> tuple[str, nn.Linear] | None:
    linears = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    return linears[-1] if linears else None


def _gap_linear_problem(
    acts: Tensor, head: _Tap, logits: Tensor, names: tuple[str, str]
) -> str | None:
    """Why the logits are not the last Linear applied to the spatial mean of ``acts`` (or None)."""
    layer, linear = names
    x = head.input if head.calls == 1 else None
    if x is None:
        return f"the last Linear {linear!r} does not run exactly once on a tensor"
    if x.shape != acts.shape[:2]:
        return (
            f"the input of the last Linear {linear!r} has shape {tuple(x.shape)}, "
            f"not the {acts.shape[1]} channels of layer {layer!r}"
        )
    if not torch.allclose(x.float(), acts.mean((2, 3)), rtol=1e-3, atol=1e-5):
        return f"the input of the last Linear {linear!r} is not the spatial mean of {layer!r}"
    if head.value is None or not torch.allclose(head.value.float(), logits.detach().float()):
        return f"the output of the last Linear {linear!r} is not the model output"
    return None


def _check_gap_linear(acts: Tensor, head: _Tap, logits: Tensor, names: tuple[str, str]) -> None:
    """Raise unless the head input is the spatial mean of ``acts`` and its output is the logits."""
    why = _gap_linear_problem(acts, head, logits, names)
    if why:
        raise ValueError(
            f"CAM needs a global-average-pool + single Linear head on the target layer: {why}. "
            "Use Grad-CAM instead (it equals CAM on such models)."
        )


def _cam_chunk(
    model: nn.Module, modules: tuple[nn.Module, nn.Linear], names: tuple[str, str], x: Tensor
) -> tuple[Tensor, Tensor]:
    tap, head = _Tap(), _Tap(keep_input=True)
    with torch.inference_mode(False), torch.no_grad(), _hooked(modules, [tap, head]):
        logits = model(x)
    value = tap.checked_value(names[0])
    layout = _layout_of(model, names[0], value, x)
    if layout.prefix:
        raise ValueError(
            f"CAM needs a global-average-pool + Linear head over the whole layer; layer "
            f"{names[0]!r} also carries {layout.prefix} class/distillation/register token(s). "
            "Use Grad-CAM instead."
        )
    acts = layout.to_spatial(value).float()
    if not isinstance(logits, Tensor):
        raise ValueError("the model must return a logits tensor [N, num_classes]")
    _check_gap_linear(acts, head, logits, names)
    return acts, logits


def cam(
    model: nn.Module,
    images: Tensor,
    classes: Classes,
    layer: str | None = None,
    batch_size: int = 64,
) -> Tensor:
    """Classic CAM (Zhou et al.): weights are the last Linear's rows; GAP + Linear heads only.

    The head is checked functionally on every chunk; any other head raises ``ValueError``.
    """
    _check_eval(model)
    _check_images(images, batch_size)
    cls, keep_k = _class_matrix(classes, len(images))
    name, module = _resolve_layer(model, images, layer)
    found = _last_linear(model)
    if found is None:
        raise ValueError("CAM needs a global-average-pool + Linear head; use Grad-CAM instead")
    linear_name, linear = found
    size = _spatial_shape(images)
    n, k = cls.shape
    out = torch.empty((n, k, *size), dtype=torch.float32, device=images.device)
    channels_last = _wants_channels_last(model)
    weight = linear.weight.detach().float()
    resizer = None
    for start in range(0, n, batch_size):
        stop = min(start + batch_size, n)
        x = _to_model(model, images[start:stop], channels_last)
        acts, logits = _cam_chunk(model, (module, linear), (name, linear_name), x)
        chunk_cls = cls[start:stop].to(weight.device)
        _check_logits(logits, chunk_cls)
        if start == 0:
            _warn_if_pointlike(acts, name, stacklevel=2)  # the caller of cam
        resizer = _maps_into(out[start:stop], weight[chunk_cls], acts, resizer)
    return out if keep_k else out[:, 0]


# --------------------------------------------------------------------------- saliency


def _saliency_chunk(model: nn.Module, x: Tensor, cls: Tensor) -> Tensor:
    with torch.inference_mode(False), torch.enable_grad():
        x = x.detach().clone().requires_grad_(True)
        grads = _class_grads(_check_logits(model(x), cls), cls, x)
    if any(g is None for g in grads):
        raise ValueError("the model output does not depend on its input")
    return torch.stack([g.float().abs().amax(1) for g in grads if g is not None], 1)


def saliency(
    model: nn.Module,
    images: Tensor,
    classes: Classes,
    layer: str | None = None,
    batch_size: int = 64,
) -> Tensor:
    """Vanilla gradient saliency: |d score / d input|, max over channels, min-max per map.

    ``layer`` is accepted for a uniform signature and ignored.
    """
    if layer is not None and not isinstance(layer, str):
        raise TypeError("saliency's 4th argument is the (ignored) layer; pass batch_size= by name")
    _check_eval(model)
    _check_images(images, batch_size)
    cls, keep_k = _class_matrix(classes, len(images))
    n, k = cls.shape
    size = _spatial_shape(images)
    out = torch.empty((n, k, *size), dtype=torch.float32, device=images.device)
    channels_last = _wants_channels_last(model)
    for start in range(0, n, batch_size):
        stop = min(start + batch_size, n)
        x = _to_model(model, images[start:stop], channels_last)
        maps = _saliency_chunk(model, x, cls[start:stop])
        out[start:stop] = _minmax_(maps.contiguous())
    return out if keep_k else out[:, 0]


# --------------------------------------------------------------------------- layer activations


def layer_activations(
    model: nn.Module, image: Tensor, layer: str | None = None, top_n: int = 8
) -> LayerActivations:
    """The ``top_n`` channels of ``layer`` with the highest mean activation for one image.

    ``image`` is [C, H, W] or [1, C, H, W]; ``layer=None`` uses :func:`find_target_layer`.
    """
    _check_eval(model)
    x = image[None] if image.dim() == 3 else image
    if x.dim() != 4 or len(x) != 1:
        raise ValueError("image must be [C, H, W] or [1, C, H, W]")
    name, module = _resolve_layer(model, x, layer)
    tap = _Tap()
    with torch.inference_mode(False), torch.no_grad(), _hooked([module], [tap]):
        model(_to_model(model, x, _wants_channels_last(model)))
    value = tap.checked_value(name)
    acts = _layout_of(model, name, value, x).to_spatial(value)[0].float()
    means = acts.mean((1, 2))
    top = torch.argsort(means, descending=True)[: max(1, min(top_n, len(means)))]
    maps = _minmax_(acts[top].contiguous().clone())
    return LayerActivations(name, top.cpu(), means[top].cpu(), maps.cpu())


METHODS: dict[str, CamMethod] = {
    "Grad-CAM": grad_cam,
    "Grad-CAM++": grad_cam_pp,
    "CAM": cam,
    "Saliency": saliency,
}
