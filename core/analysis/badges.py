"""Faithfulness badges of a gallery page, cached server-wide like the maps.

A badge is the faithfulness score of one map shown in the gallery
(:func:`core.explain.faithfulness.faithfulness`: the share of the class's probability lost when
the map's region is removed). :class:`ScoreCache` keeps them keyed like the maps (evaluation
fingerprint, method, layer, image, class), so a revisit, by anyone, costs nothing.
:func:`score_page` computes the missing ones of a page in one batched call (2-3 forward passes
per map); :class:`BadgeWorker` runs those calls on one background thread, one page at a time, so
the panels are shown first and the badges follow.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING

import numpy as np

from core.data.datasets import ImageDataset

if TYPE_CHECKING:
    from core.data.models import LoadedModel

__all__ = ["BadgeWorker", "ScoreCache", "badge_text", "score_page"]

Key = tuple[Hashable, str, int]  # (scope, image path, class)


def badge_text(score: float) -> str:
    """What a badge reads for a score: ``drop 62 %`` (removing the map's region loses 62 % of
    the class's probability), ``gain 5 %`` (the class is more likely without it)."""
    if not math.isfinite(score):
        return "n/a"
    percent = round(abs(score) * 100)
    return f"gain {percent} %" if score < 0 and percent > 0 else f"drop {percent} %"


class ScoreCache:
    """Thread-safe LRU of map scores (float), bounded by count."""

    def __init__(self, max_items: int = 1_000_000) -> None:
        self.max_items = max_items
        self._scores: OrderedDict[Key, float] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        with self._lock:
            return len(self._scores)

    def get(self, key: Key) -> float | None:
        with self._lock:
            value = self._scores.get(key)
            if value is not None:
                self._scores.move_to_end(key)
            return value

    def get_many(self, keys: Sequence[Key]) -> list[float | None]:
        return [self.get(key) for key in keys]

    def put(self, key: Key, value: float) -> None:
        with self._lock:
            self._scores[key] = float(value)
            self._scores.move_to_end(key)
            while len(self._scores) > self.max_items:
                self._scores.popitem(last=False)


def score_page(
    model: LoadedModel,
    dataset: ImageDataset,
    scope: Hashable,
    paths: Sequence[str],
    classes: Sequence[Sequence[int]],
    maps: Sequence[Sequence[np.ndarray] | None],
    cache: ScoreCache,
    batch_size: int = 64,
) -> int:
    """Score the maps of a page whose scores are not in ``cache`` yet, in one batched call;
    ``maps[i]`` are image ``paths[i]``'s maps [H, W] in [0, 1] of ``classes[i]`` (None: the
    image could not be shown). Returns how many maps were scored; an image that cannot be read
    now is left out (its badge stays empty)."""
    import torch

    from core.analysis.trust import load_images
    from core.explain.faithfulness import faithfulness

    todo = [
        i
        for i, (path, cls, found) in enumerate(zip(paths, classes, maps, strict=True))
        if found is not None and any(cache.get((scope, path, int(c))) is None for c in cls)
    ]
    if not todo:
        return 0
    images, kept, _ = load_images(model, dataset, [paths[i] for i in todo])
    todo = [todo[i] for i in kept]
    if not todo:
        return 0
    width = max(len(classes[i]) for i in todo)
    cls = torch.tensor([_pad(classes[i], width) for i in todo], dtype=torch.long)
    stacked = torch.stack(
        [torch.from_numpy(np.stack(_pad(list(maps[i] or []), width))) for i in todo]
    ).float()
    scores = faithfulness(
        model.module, images.to(model.device), stacked, cls, batch_size=batch_size, keep=False
    ).score
    for row, i in enumerate(todo):
        for k, c in enumerate(classes[i]):
            cache.put((scope, paths[i], int(c)), float(scores[row, k]))
    return len(todo) * width


def _pad(values: Sequence, width: int) -> list:  # type: ignore[type-arg]
    values = list(values)
    return values + [values[-1]] * (width - len(values))


class BadgeWorker:
    """One background thread that scores pages, one at a time, each page once (a page asked
    for while it is being scored gets the same future)."""

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="badges")
        self._pending: dict[Hashable, Future[int]] = {}
        self._lock = threading.Lock()

    def submit(self, key: Hashable, job: Callable[[], int]) -> Future[int]:
        with self._lock:
            future = self._pending.get(key)
            if future is not None and not future.done():
                return future
            future = self._pool.submit(job)
            self._pending[key] = future
            future.add_done_callback(lambda _: self._forget(key))
            return future

    def _forget(self, key: Hashable) -> None:
        with self._lock:
            if key in self._pending and self._pending[key].done():
                del self._pending[key]
