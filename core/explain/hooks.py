"""Hooks and input checks shared by every map method (as torchcam's base class owns them).

A :class:`Tap` is a per-call forward hook that acts only in the thread that made it, and
:func:`hooked` registers taps for one block and always removes them, so concurrent calls on one
shared model (one per dashboard session) never see each other's forward passes.
"""

from __future__ import annotations

import difflib
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn

__all__ = [
    "Classes",
    "Tap",
    "check_eval",
    "check_images",
    "check_logits",
    "class_matrix",
    "get_module",
    "hooked",
    "model_param",
    "spatial_shape",
    "to_model",
    "wants_channels_last",
]

# torch's ``RemovableHandle`` takes its id from a class counter with ``next_id += 1``, which is not
# atomic: two threads registering at the same moment can get the same id, and then one hook
# overwrites the other in the module's hook dict. Our registrations are serialised by this lock.
_REGISTER_LOCK = threading.Lock()

Classes = int | Tensor | Sequence[int]

# --------------------------------------------------------------------------- hooks


class Tap:
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
def hooked(
    modules: Sequence[nn.Module], hooks: Sequence[Callable[..., Any]], pre: bool = False
) -> Iterator[None]:
    """Register forward hooks (``pre``: forward pre-hooks, which see a module's input) for the
    duration of a block; always removed, also on errors."""
    handles = []
    try:
        for module, hook in zip(modules, hooks, strict=True):
            with _REGISTER_LOCK:
                register = module.register_forward_pre_hook if pre else module.register_forward_hook
                handles.append(register(hook))
        yield
    finally:
        for handle in handles:
            handle.remove()


# --------------------------------------------------------------------------- checks and inputs


def check_eval(model: nn.Module) -> None:
    if not any(m.training for m in model.modules()):
        return
    training = [name or type(model).__name__ for name, m in model.named_modules() if m.training]
    raise ValueError(
        f"model is in training mode ({', '.join(training[:3])}); call model.eval() first: "
        "in train mode BatchNorm makes each map depend on its batch and updates running stats"
    )


def get_module(model: nn.Module, name: str) -> nn.Module:
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


def model_param(model: nn.Module) -> Tensor | None:
    return next((p for p in model.parameters() if p.is_floating_point()), None)


def wants_channels_last(model: nn.Module) -> bool:
    conv = next((p for p in model.parameters() if p.dim() == 4), None)
    return (
        conv is not None
        and conv.is_contiguous(memory_format=torch.channels_last)
        and not conv.is_contiguous()
    )


def to_model(model: nn.Module, x: Tensor, channels_last: bool) -> Tensor:
    param = model_param(model)
    if param is not None:
        x = x.to(device=param.device, dtype=param.dtype)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def check_images(images: Tensor, batch_size: int) -> None:
    if not isinstance(images, Tensor) or images.dim() != 4 or not images.is_floating_point():
        raise ValueError("images must be a float tensor [N, C, H, W]")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")


def class_matrix(classes: Classes, n: int) -> tuple[Tensor, bool]:
    """Classes as an int64 [N, K] tensor, and whether the caller asked for [N, K]."""
    if isinstance(classes, int):
        return torch.full((n, 1), classes, dtype=torch.long), False
    cls = torch.as_tensor(classes).cpu()
    if cls.is_floating_point() or cls.is_complex() or cls.dim() not in (1, 2) or len(cls) != n:
        raise ValueError(f"classes must be an int or an integer tensor [N] or [N, K] with N={n}")
    return (cls.long()[:, None], False) if cls.dim() == 1 else (cls.long(), True)


def check_logits(logits: Any, cls: Tensor) -> Tensor:
    if not isinstance(logits, Tensor) or logits.dim() != 2:
        raise ValueError("the model must return a logits tensor [N, num_classes]")
    if cls.numel() and (int(cls.min()) < 0 or int(cls.max()) >= logits.shape[1]):
        raise ValueError(f"class indices must lie in [0, {logits.shape[1]})")
    return logits


def spatial_shape(images: Tensor) -> tuple[int, int]:
    return int(images.shape[-2]), int(images.shape[-1])
