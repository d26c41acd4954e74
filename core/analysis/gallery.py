"""What the dashboard's cell view shows: a cell's images sorted and paged, and their maps.

For an error (true ≠ predicted) each image gets the map of the predicted and of the true
class; on the diagonal, of the predicted class and the runner-up. Maps of a page come from a
shared :class:`~core.explain.map_cache.MapCache` in one batched call; an image that cannot be
read when
the page is drawn (changed, deleted or refused since the evaluation) fails alone, as
:class:`~core.explain.map_cache.Unavailable` with its reason.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from functools import partial
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from core.data.datasets import ImageDataset
from core.errors import UserFacingError
from core.explain.normalise import display_maps
from core.results import Results

if TYPE_CHECKING:  # torch, the models and the CAM code load on first use: a page that only
    # lists rows (the matrix, a cell's table) never imports them
    import torch

    from core.analysis.panels import PanelCache
    from core.data.models import LoadedModel
    from core.explain.map_cache import MapCache, Unavailable

__all__ = [
    "STORED_METHOD",
    "class_maps",
    "compared_classes",
    "first_pages",
    "page_count",
    "page_maps",
    "page_rows",
    "sort_rows",
    "stored_maps",
    "stored_size",
    "uses_stored_maps",
    "warm_pages",
    "warm_stored_pages",
]

STORED_METHOD = "Grad-CAM"  # the method whose maps the evaluation stores


def sort_rows(rows: pd.DataFrame, column: str, ascending: bool) -> pd.DataFrame:
    """Rows ordered by ``column`` (confidence, true_prob or loss), ties by path."""
    return rows.sort_values([column, "path"], ascending=[ascending, True], kind="stable")


def page_count(n_rows: int, page_size: int) -> int:
    """Number of pages (at least 1)."""
    return max(1, math.ceil(n_rows / page_size))


def page_rows(rows: pd.DataFrame, page: int, page_size: int) -> pd.DataFrame:
    """Rows of 1-based ``page``; a page past the end gives the last page."""
    page = min(max(1, page), page_count(len(rows), page_size))
    return rows.iloc[(page - 1) * page_size : page * page_size]


def compared_classes(row: pd.Series) -> tuple[int, int]:
    """(predicted class, true class) for an error; (predicted, runner-up) when correct."""
    pred, true = int(row["pred"]), int(row["true"])
    return (pred, true) if pred != true else (pred, int(row["runner_up"]))


def uses_stored_maps(result: Results, method: str, layer: str | None) -> bool:
    """Whether the page's maps come from the result itself (no model call): Grad-CAM at the
    layer the evaluation stored."""
    stored = result.meta.get("map_layer")
    return result.has_maps and method == STORED_METHOD and layer in (None, stored)


def stored_maps(
    result: Results, rows: pd.DataFrame, size: tuple[int, int]
) -> list[list[np.ndarray]]:
    """The stored raw maps of ``rows`` (predicted class, then true class or runner-up),
    normalised for display at ``size`` as :func:`~core.explain.cam.grad_cam` does (in NumPy:
    a page of stored maps needs no torch)."""
    if rows.empty:
        return []
    maps = display_maps(result.maps(rows["index"].to_numpy()), size)
    return [list(pair) for pair in maps]


def stored_size(result: Results) -> tuple[int, int] | None:
    """The model input size the stored maps are drawn at (None for results that predate it)."""
    size = result.meta.get("input_size")
    return (int(size[0]), int(size[1])) if isinstance(size, list) and len(size) == 2 else None


def page_maps(
    model: LoadedModel,
    dataset: ImageDataset,
    rows: pd.DataFrame,
    method: str,
    layer: str | None,
    cache: MapCache,
    fingerprint: str,
    batch_size: int = 64,
) -> list[list[np.ndarray] | Unavailable]:
    """Maps at model-input resolution for each row's :func:`compared_classes`, in row order;
    :class:`Unavailable` (with the reason) for a row whose image cannot be read now.

    ``fingerprint`` (the evaluation's cache key: weights, files, transform) scopes the cache, so
    changed weights or images never show stale maps.
    """
    pairs = [compared_classes(row) for _, row in rows.iterrows()]
    return class_maps(
        model, dataset, list(rows["path"]), pairs, method, layer, cache, fingerprint, batch_size
    )


def class_maps(
    model: LoadedModel,
    dataset: ImageDataset,
    paths: list[str],
    classes: Sequence[tuple[int, ...]],
    method: str,
    layer: str | None,
    cache: MapCache,
    fingerprint: str,
    batch_size: int = 64,
) -> list[list[np.ndarray] | Unavailable]:
    """Maps of the given classes of each image (e.g. (predicted, given label)), in order;
    :class:`Unavailable` for an image that cannot be read now."""
    from core.explain.cam import METHODS
    from core.explain.map_cache import MapRequest

    compute = partial(METHODS[method], model.module, layer=layer, batch_size=batch_size)
    scope = (fingerprint, method, layer or "")
    requests = [
        MapRequest(image_key=path, classes=tuple(pair), load=_loader(model, dataset, path))
        for path, pair in zip(paths, classes, strict=True)
    ]
    return cache.get_many(
        scope, requests, lambda images, classes: compute(images.to(model.device), classes)
    )


def _loader(model: LoadedModel, dataset: ImageDataset, path: str) -> Callable[[], torch.Tensor]:
    def load() -> torch.Tensor:  # the evaluation's own read, resize and normalisation
        return model.normalize(model.resize(dataset.load(path, model.spec.channels)))

    return load


def first_pages(
    predictions: pd.DataFrame,
    column: str,
    ascending: bool,
    page_size: int,
    limit: int,
    max_cells: int = 200,
) -> list[pd.DataFrame]:
    """Page 1 of every non-empty cell, errors first, larger cells first, ``limit`` rows and
    ``max_cells`` cells in all (a 1,000-class matrix has thousands of one-image cells).

    The order is the one people click in: the biggest confusions, then the diagonal.
    """
    cells = predictions.groupby(["true", "pred"])  # one pass over the table for every cell
    sizes = cells.size().reset_index(name="n")
    sizes["diagonal"] = sizes["true"] == sizes["pred"]
    order = ["diagonal", "n", "true", "pred"]
    sizes = sizes.sort_values(order, ascending=[True, False, True, True]).head(max_cells)
    pages, total = [], 0
    for true, pred in zip(sizes["true"], sizes["pred"], strict=True):
        cell = cells.get_group((true, pred))
        page = page_rows(sort_rows(cell, column, ascending), 1, page_size)
        if total + len(page) > limit:
            break
        pages.append(page)
        total += len(page)
    return pages


def warm_pages(
    model: LoadedModel,
    dataset: ImageDataset,
    pages: list[pd.DataFrame],
    method: str,
    layer: str | None,
    maps: MapCache,
    panels: PanelCache,
    fingerprint: str,
    alpha: float,
    result: Results | None = None,
) -> int:
    """Compute and encode the maps of ``pages`` ahead of the first click; returns images done.

    Unreadable files and methods that do not apply to the model are skipped: warming up must
    never fail where the gallery itself would show a clear message. With ``result`` holding
    the maps asked for, they are read from it (no model call).
    """
    if result is not None and uses_stored_maps(result, method, layer):
        return warm_stored_pages(result, dataset, pages, model.spec.input_size, panels, alpha)
    page_of = partial(
        page_maps, model, dataset, method=method, layer=layer, cache=maps, fingerprint=fingerprint
    )
    return _encode_pages(dataset, pages, page_of, panels, alpha)


def warm_stored_pages(
    result: Results,
    dataset: ImageDataset,
    pages: list[pd.DataFrame],
    size: tuple[int, int],
    panels: PanelCache,
    alpha: float,
) -> int:
    """:func:`warm_pages` from the maps the result stores, drawn at the model's input ``size``:
    no model, so a fresh server warms its first pages without waiting for torch."""
    page_of = partial(stored_maps, result, size=size)
    return _encode_pages(dataset, pages, page_of, panels, alpha)


def _encode_pages(
    dataset: ImageDataset,
    pages: list[pd.DataFrame],
    page_of: Callable[[pd.DataFrame], Sequence[Sequence[np.ndarray] | Unavailable]],
    panels: PanelCache,
    alpha: float,
) -> int:
    from core.explain.map_cache import Unavailable

    done = 0
    for rows in pages:
        try:
            page = page_of(rows)
        except (ValueError, OSError, UserFacingError):
            return done
        for path, row_maps in zip(rows["path"], page, strict=True):
            if isinstance(row_maps, Unavailable):
                continue
            try:
                panels.panels(dataset, path, list(row_maps), alpha)
            except Exception:  # the card shows the reason when the page is drawn
                continue
            done += 1
    return done
