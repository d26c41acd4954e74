"""A bounded, thread-safe store of class activation maps shared by every dashboard session.

Maps are keyed by (model, method, layer, dataset, image, class), stored as uint8 at the
model's input resolution (a 224×224 map is 49 KB), and computed for the missing keys of a
page in one batched call, so a page costs one forward pass and a revisit costs nothing. An
image that cannot be loaded fails alone: the others of its page are computed, and it is
returned as :class:`Unavailable` with the reason.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from core.errors import reason_of

if TYPE_CHECKING:  # tensors pass through; torch is imported where maps are computed
    import torch

__all__ = ["MapCache", "MapRequest", "Unavailable"]

ComputeMaps = Callable[["torch.Tensor", "torch.Tensor"], "torch.Tensor"]
"""``compute(images [N,C,H,W], classes [N,K]) -> maps [N,K,H,W]`` in [0, 1]."""


@dataclass(frozen=True)
class MapRequest:
    """One image of a page and the classes whose maps it needs."""

    image_key: Hashable
    classes: tuple[int, ...]
    load: Callable[[], torch.Tensor]
    """Returns the model input [C,H,W]; called only when a map is missing."""


@dataclass(frozen=True)
class Unavailable:
    """An image whose maps could not be made (its file vanished, broke or is refused), and why."""

    reason: str


class MapCache:
    """LRU of maps; ``get_many`` computes what is missing in one call of ``compute``."""

    def __init__(self, max_bytes: int = 512 << 20) -> None:
        self.max_bytes = max_bytes
        self._maps: OrderedDict[Hashable, np.ndarray] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def __len__(self) -> int:
        with self._lock:
            return len(self._maps)

    def get_many(
        self, scope: Hashable, requests: Sequence[MapRequest], compute: ComputeMaps
    ) -> list[list[np.ndarray] | Unavailable]:
        """Float32 [H,W] maps in [0,1] (8-bit steps) per request and class, within ``scope``;
        :class:`Unavailable` for a request whose ``load`` failed (nothing is cached for it)."""
        found = {key: self._get(key) for key in self._keys(scope, requests)}
        missing = [
            r for r in requests if any(found[(scope, r.image_key, c)] is None for c in r.classes)
        ]
        failed: dict[Hashable, Unavailable] = {}
        if missing:
            computed, failed = self._compute(scope, missing, compute)
            for key, value in computed.items():
                found[key] = self._put(key, value)
        return [
            failed[r.image_key]
            if r.image_key in failed
            else [found[(scope, r.image_key, c)].astype(np.float32) / 255.0 for c in r.classes]  # type: ignore[union-attr]
            for r in requests
        ]

    @staticmethod
    def _keys(scope: Hashable, requests: Sequence[MapRequest]) -> list[Hashable]:
        return [(scope, r.image_key, c) for r in requests for c in r.classes]

    def _compute(
        self, scope: Hashable, requests: Sequence[MapRequest], compute: ComputeMaps
    ) -> tuple[dict[Hashable, np.ndarray], dict[Hashable, Unavailable]]:
        inputs, failed = {}, {}
        for request in requests:
            try:
                inputs[request.image_key] = request.load()
            except Exception as exc:  # one bad file must not cost the page its other maps
                failed[request.image_key] = Unavailable(reason_of(exc))
        requests = [r for r in requests if r.image_key not in failed]
        if not requests:
            return {}, failed
        import torch

        width = max(len(r.classes) for r in requests)
        images = torch.stack([inputs[r.image_key] for r in requests])
        classes = torch.tensor(
            [list(r.classes) + [r.classes[-1]] * (width - len(r.classes)) for r in requests]
        )
        maps = compute(images, classes).detach().cpu().numpy()
        out: dict[Hashable, np.ndarray] = {}
        for i, request in enumerate(requests):
            for k, cls in enumerate(request.classes):
                out[(scope, request.image_key, cls)] = np.round(maps[i, k] * 255.0).astype(np.uint8)
        return out, failed

    def _get(self, key: Hashable) -> np.ndarray | None:
        with self._lock:
            value = self._maps.get(key)
            if value is not None:
                self._maps.move_to_end(key)
            return value

    def _put(self, key: Hashable, value: np.ndarray) -> np.ndarray:
        with self._lock:
            if key not in self._maps:
                self._maps[key] = value
                self._bytes += value.nbytes
            while self._bytes > self.max_bytes and len(self._maps) > 1:
                _, old = self._maps.popitem(last=False)
                self._bytes -= old.nbytes
            return self._maps.get(key, value)
