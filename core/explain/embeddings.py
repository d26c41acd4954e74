"""Image embeddings taken from the evaluation's own forward pass: the input of the classifier head.

The head is the module whose input torchvision, timm and most factories call the features: timm's
``get_classifier()`` (its input is ``forward_head(pre_logits=True)``), torchvision's ``fc``,
``heads.head``, ``head`` or the last ``Linear`` of ``classifier``, and otherwise the model's
last ``Linear``. A per-call forward pre-hook copies that input while the evaluation runs the
model anyway, so an embedding costs one small matrix product per batch, not a second forward.

Stored size: :data:`EMBEDDING_DIM` float16 values (256 bytes) per image. Features of up to that
many dimensions are stored as they are (zero-padded); wider ones are multiplied by a fixed
Gaussian random projection (seeded, scaled by ``1/sqrt(dim)``). Why a random projection and not
PCA fitted on the first batches: it needs no data, so every batch, a resumed run and every Ray
actor project identically without coordinating; the first batches of a folder-sorted test set
hold one or two classes, so a PCA fitted there would describe them and not the set; and by the
Johnson-Lindenstrauss lemma it keeps Euclidean distances (what the nearest-neighbour search and
the map use) within a few percent on average at 128 dimensions.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn

from core.explain.hooks import hooked

__all__ = [
    "EMBEDDING_DIM",
    "EmbeddingTap",
    "head_module",
    "project",
    "projection",
    "tapped_head",
]

EMBEDDING_DIM = 128  # float16: 256 bytes per image
PROJECTION_SEED = 20_251_203
_FLOAT16_MAX = 65_000.0


def head_module(model: nn.Module) -> nn.Module | None:
    """The classifier head whose input is the embedding, or None if the model has no Linear."""
    get_classifier = getattr(model, "get_classifier", None)
    if callable(get_classifier):  # timm
        try:
            head = get_classifier()
        except Exception:  # a factory's own get_classifier may want arguments
            head = None
        if isinstance(head, nn.Linear):
            return head
    for name in ("fc", "heads.head", "head", "classifier"):
        try:
            module = model.get_submodule(name)
        except AttributeError:
            continue
        if isinstance(module, nn.Linear):
            return module
        if name == "classifier":  # torchvision: Sequential(..., Linear)
            linears = [m for m in module.modules() if isinstance(m, nn.Linear)]
            if linears:
                return linears[-1]
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    return linears[-1] if linears else None


def projection(features: int, device: torch.device | str = "cpu") -> Tensor | None:
    """The fixed [features, EMBEDDING_DIM] projection, or None when no projection is needed."""
    if features <= EMBEDDING_DIM:
        return None
    generator = torch.Generator().manual_seed(PROJECTION_SEED)
    matrix = torch.randn(features, EMBEDDING_DIM, generator=generator, dtype=torch.float32)
    return (matrix / math.sqrt(EMBEDDING_DIM)).to(device)


_PROJECTIONS: dict[tuple[int, str], Tensor | None] = {}
_PROJECTIONS_LOCK = threading.Lock()


def project(features: Tensor) -> Tensor:
    """Head inputs [N, D] (any float dtype) → float16 embeddings [N, EMBEDDING_DIM]."""
    x = features.detach().float().reshape(len(features), -1)
    d = x.shape[1]
    if d <= EMBEDDING_DIM:
        out = torch.nn.functional.pad(x, (0, EMBEDDING_DIM - d))
    else:
        key = (d, str(x.device))
        with _PROJECTIONS_LOCK:
            if key not in _PROJECTIONS:
                _PROJECTIONS[key] = projection(d, x.device)
            matrix = _PROJECTIONS[key]
        assert matrix is not None
        out = x @ matrix
    return out.clamp(-_FLOAT16_MAX, _FLOAT16_MAX).half()


class EmbeddingTap:
    """Per-call forward pre-hook on the head: keeps a copy of its input, in its own thread only.

    Other threads running the same (shared) model are ignored, as the map taps in
    :mod:`core.explain.cam` do. A head that runs more than once per forward keeps the last input.
    """

    def __init__(self) -> None:
        self.thread = threading.get_ident()
        self.value: Tensor | None = None

    def __call__(self, module: nn.Module, args: tuple[Any, ...]) -> None:
        if threading.get_ident() == self.thread and args and isinstance(args[0], Tensor):
            self.value = args[0].detach()

    def embeddings(self) -> Tensor:
        """The captured head input projected to float16 [N, EMBEDDING_DIM]."""
        if self.value is None:
            raise ValueError("the classifier head did not run on a tensor")
        return project(self.value)


@contextmanager
def tapped_head(model: nn.Module) -> Iterator[EmbeddingTap | None]:
    """Hook the head of ``model`` for the block (removed afterwards, also on errors); yields
    the tap, or None where the model has no Linear head."""
    head = head_module(model)
    if head is None:
        yield None
        return
    tap = EmbeddingTap()
    with hooked([head], [tap], pre=True):
        yield tap
