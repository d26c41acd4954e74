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

This module holds the methods (their weights and normalisation); the hooks and input checks they
share live in :mod:`core.explain.hooks`, layer discovery and token-grid layouts in
:mod:`core.explain.layers`.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
from torch import Tensor, nn

from core.explain.hooks import (
    Classes,
    Tap,
    check_eval,
    check_images,
    check_logits,
    class_matrix,
    hooked,
    spatial_shape,
    to_model,
    wants_channels_last,
)
from core.explain.layers import (
    LayerInfo,
    candidate_layers,
    find_target_layer,
    layout_of,
    resolve_layer,
)
from core.explain.normalise import EPS, resize_matrix

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

_PP_EPS = 1e-6  # pytorch-grad-cam's Grad-CAM++ denominator epsilon


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


# --------------------------------------------------------------------------- normalisation


def _minmax_(maps: Tensor) -> Tensor:
    """Per-map ``x - min; x / (1e-7 + max)`` over the last two dims, in place."""
    flat = maps.view(*maps.shape[:-2], -1)
    flat.sub_(flat.amin(-1, keepdim=True))
    flat.div_(flat.amax(-1, keepdim=True).add_(EPS))
    return maps


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

        return cls(tensor(resize_matrix(src[0], dst[0])), tensor(resize_matrix(src[1], dst[1]).T))

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
    tap = Tap(grad=True)
    linear = _last_linear(model)
    head = Tap(keep_input=True, replace=False)
    modules, taps = ([module, linear[1]], [tap, head]) if linear else ([module], [tap])
    with torch.inference_mode(False):  # the caller may be in inference mode or no_grad
        with torch.no_grad(), hooked(modules, taps):
            logits = model(x)
        leaf = tap.checked_value(name)
        layout = layout_of(model, name, leaf, x)
        if isinstance(logits, Tensor) and callable(classes):
            classes = classes(logits.detach())
        cls = classes if isinstance(classes, Tensor) else torch.empty(0, 1, dtype=torch.long)
        logits = check_logits(logits, cls)
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


def _is_gap_linear(acts: Tensor, head: Tap, logits: Tensor) -> bool:
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
    check_eval(model)
    check_images(images, batch_size)
    cls, keep_k = class_matrix(classes, len(images))
    name, module = resolve_layer(model, images, layer)
    size = spatial_shape(images)
    n, k = cls.shape
    out = torch.empty((n, k, *size), dtype=torch.float32, device=images.device)
    channels_last = wants_channels_last(model)
    resizer = None
    for start in range(0, n, batch_size):
        stop = min(start + batch_size, n)
        x = to_model(model, images[start:stop], channels_last)
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
    check_eval(model)
    check_images(images, 1)
    label_tensor = _check_labels(labels, len(images))
    name, module = resolve_layer(model, images, layer)
    x = to_model(model, images, wants_channels_last(model))
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
    acts: Tensor, head: Tap, logits: Tensor, names: tuple[str, str]
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


def _check_gap_linear(acts: Tensor, head: Tap, logits: Tensor, names: tuple[str, str]) -> None:
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
    tap, head = Tap(), Tap(keep_input=True)
    with torch.inference_mode(False), torch.no_grad(), hooked(modules, [tap, head]):
        logits = model(x)
    value = tap.checked_value(names[0])
    layout = layout_of(model, names[0], value, x)
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
    check_eval(model)
    check_images(images, batch_size)
    cls, keep_k = class_matrix(classes, len(images))
    name, module = resolve_layer(model, images, layer)
    found = _last_linear(model)
    if found is None:
        raise ValueError("CAM needs a global-average-pool + Linear head; use Grad-CAM instead")
    linear_name, linear = found
    size = spatial_shape(images)
    n, k = cls.shape
    out = torch.empty((n, k, *size), dtype=torch.float32, device=images.device)
    channels_last = wants_channels_last(model)
    weight = linear.weight.detach().float()
    resizer = None
    for start in range(0, n, batch_size):
        stop = min(start + batch_size, n)
        x = to_model(model, images[start:stop], channels_last)
        acts, logits = _cam_chunk(model, (module, linear), (name, linear_name), x)
        chunk_cls = cls[start:stop].to(weight.device)
        check_logits(logits, chunk_cls)
        if start == 0:
            _warn_if_pointlike(acts, name, stacklevel=2)  # the caller of cam
        resizer = _maps_into(out[start:stop], weight[chunk_cls], acts, resizer)
    return out if keep_k else out[:, 0]


# --------------------------------------------------------------------------- saliency


def _saliency_chunk(model: nn.Module, x: Tensor, cls: Tensor) -> Tensor:
    with torch.inference_mode(False), torch.enable_grad():
        x = x.detach().clone().requires_grad_(True)
        grads = _class_grads(check_logits(model(x), cls), cls, x)
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
    check_eval(model)
    check_images(images, batch_size)
    cls, keep_k = class_matrix(classes, len(images))
    n, k = cls.shape
    size = spatial_shape(images)
    out = torch.empty((n, k, *size), dtype=torch.float32, device=images.device)
    channels_last = wants_channels_last(model)
    for start in range(0, n, batch_size):
        stop = min(start + batch_size, n)
        x = to_model(model, images[start:stop], channels_last)
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
    check_eval(model)
    x = image[None] if image.dim() == 3 else image
    if x.dim() != 4 or len(x) != 1:
        raise ValueError("image must be [C, H, W] or [1, C, H, W]")
    name, module = resolve_layer(model, x, layer)
    tap = Tap()
    with torch.inference_mode(False), torch.no_grad(), hooked([module], [tap]):
        model(to_model(model, x, wants_channels_last(model)))
    value = tap.checked_value(name)
    acts = layout_of(model, name, value, x).to_spatial(value)[0].float()
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
