"""Galleries of cards, as the cell view, a chart's bar, a map selection and similar images draw
them: one card per image with its file name, probabilities, the image and both CAM panels (each
with its faithfulness badge), tags and notes; a page of cards is sent as one HTML element."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from html import escape
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from core import ImageDataset, Results, UserFacingError
from core.analysis.gallery import (
    compared_classes,
    page_maps,
    stored_maps,
    stored_size,
    uses_stored_maps,
)
from core.data.datasets import dataset_key
from core.errors import reason_of
from core.notes import NotesStore, PathSummary
from dashboard.parts.badges import PageBadges
from dashboard.parts.layers import layer_choice
from dashboard.parts.notes import badge_text
from dashboard.state import resources
from dashboard.state.settings import settings
from dashboard.state.view_state import ViewState

if TYPE_CHECKING:  # the CAM code loads when a cell is opened, not for the matrix
    from core.explain.map_cache import Unavailable

__all__ = [
    "card_html",
    "gallery_html",
    "gallery_page",
    "model_maps_at",
    "rows_csv",
    "stored_maps_at",
]


BADGES_LOAD_DELAY = 1.0  # seconds: torch's import holds the GIL in stalls of up to 0.4 s


def gallery_page(
    config_path: str, view: ViewState, result: Results, rows: pd.DataFrame, heading: str
) -> tuple[str, str | None, PageBadges]:
    """Any page of cards (a selection, a chart's bar, similar images) as the cell view draws
    them: the HTML, a message when the maps cannot be computed, and the page's badges (their
    ``show()`` scores the missing ones in the background). Raises :class:`UserFacingError` when
    the maps need a model that cannot be loaded."""
    layer, size = stored_maps_at(result, view) or model_maps_at(config_path, view)
    store = resources.notes_store(config_path, settings().read_only)
    notes_key = dataset_key(resources.project(config_path).dataset(view.dataset))
    return gallery_html(config_path, view, result, rows, layer, size, store, notes_key, heading)


def stored_maps_at(result: Results, view: ViewState) -> tuple[str, tuple[int, int]] | None:
    """(layer, input size) when the view's maps are the result's own (drawn without the model),
    else None."""
    size = stored_size(result)
    if size is None or not uses_stored_maps(result, view.method, view.layer or None):
        return None
    return result.meta["map_layer"], size


def model_maps_at(config_path: str, view: ViewState) -> tuple[str | None, tuple[int, int]]:
    """(layer, input size) of maps the model computes; waits for the model's load."""
    _, layer = layer_choice(config_path, view)
    return layer, resources.model(config_path, view.model).spec.input_size


def gallery_html(
    config_path: str,
    view: ViewState,
    result: Results,
    rows: pd.DataFrame,
    layer: str | None,
    size: tuple[int, int],
    store: NotesStore,
    notes_key: str,
    heading: str,
) -> tuple[str, str | None, PageBadges]:
    """The page of cards as one HTML string, a message when the maps cannot be computed, and
    the page's faithfulness badges (drawn in the cards when known, else filled in later).

    The grid carries its cell's ``heading`` (``data-heading``): the heading is its own element,
    drawn a frame or two before the cards, so a reader of the page (a test) can tell the new
    cell's cards from the previous cell's.
    """
    dataset = resources.dataset(config_path, view.dataset, view.model)
    problem = None
    try:
        maps: list[list[np.ndarray | None] | Unavailable]
        if uses_stored_maps(result, view.method, layer):  # made in the evaluation: no model call
            maps = stored_maps(result, rows, size)  # type: ignore[assignment]
            maps = _corrected_maps(config_path, view, dataset, result, rows, layer, maps)
        else:
            model = resources.model(config_path, view.model)
            maps = page_maps(
                model, dataset, rows, view.method, layer, resources.map_cache(), result.fingerprint
            )  # type: ignore[assignment]
    except (ValueError, UserFacingError) as exc:  # e.g. classic CAM on a model without GAP head
        problem = f"{view.method} cannot be computed for this model: {exc}"
        maps = [[None, None] for _ in range(len(rows))]
    summaries = store.counts_by_path(notes_key, rows["path"]) if len(rows) else {}
    # badges wait for the model, not the page: where nothing has started its load yet (a Map
    # selection of stored maps), it starts once this page's images are served
    loading = resources.model_loading(config_path, view.model, start_in=BADGES_LOAD_DELAY)
    badges = PageBadges.of(
        lambda: loading.result().loaded,
        dataset,
        result,
        view.method,
        layer,
        rows,
        maps if problem is None else None,
    )
    cards = [
        _card(dataset, row, row_maps, result.classes, view, summaries.get(row["path"]), html)
        for (_, row), row_maps, html in zip(rows.iterrows(), maps, badges.html, strict=True)
    ]
    grid = f'<div class="cam-gallery" data-heading="{escape(heading)}" style="{_GRID}">'
    return f"{grid}{''.join(cards)}</div>", problem, badges


def _card(
    dataset: ImageDataset,
    row: pd.Series,
    maps: list[np.ndarray | None] | Unavailable,
    names: tuple[str, ...],
    view: ViewState,
    summary: PathSummary | None,
    map_badges: Sequence[str] = (),
) -> str:
    """One card's HTML: file name, probabilities, image and both CAM panels (each with its
    faithfulness badge), tags and notes.

    An image that cannot be read now (changed, deleted or refused since the evaluation) gets
    a short message in place of its panels; the other cards are unaffected.
    """

    from core.explain.map_cache import Unavailable

    first, second = compared_classes(row)
    diagonal = int(row["true"]) == int(row["pred"])
    problem, urls = "", ["", "", ""]
    try:
        if isinstance(maps, Unavailable):
            problem = maps.reason
        else:
            urls = resources.panel_cache().panels(dataset, row["path"], maps, view.opacity)
    except Exception as exc:  # the file changed or vanished since the evaluation
        problem = reason_of(exc)
    runner_up = f" · runner-up {names[second]} ({row['runner_up_prob']:.1%})" if diagonal else ""
    other = f"runner-up {names[second]}" if diagonal else f"true {names[second]}"
    caption = (
        f"predicted {names[first]}",
        f" ({row['confidence']:.1%}) · true {names[int(row['true'])]} "
        f"({row['true_prob']:.1%}){runner_up}",
    )
    labels = ("image", f"{view.method} · predicted {names[first]}", f"{view.method} · {other}")
    name = dataset.display_name(row["path"])
    if problem:
        return card_html(name, caption, [], badge_text(summary), f"cannot be shown: {problem}")
    return card_html(
        name,
        caption,
        zip(urls, labels, strict=True),
        badge_text(summary),
        panel_badges=["", *map_badges],
    )


def _corrected_maps(config_path, view, dataset, result, rows, layer, maps):  # type: ignore[no-untyped-def]
    """The stored maps, except for rows whose label was corrected (``given``, the dataset's
    label, differs from ``true``): the stored second map is the dataset label's, so theirs are
    computed for the corrected label."""
    if "given" not in rows or not len(rows):
        return maps
    changed = np.flatnonzero((rows["given"] != rows["true"]).to_numpy())
    if not len(changed):
        return maps
    model = resources.model(config_path, view.model)
    cache = resources.map_cache()
    fresh = page_maps(
        model, dataset, rows.iloc[changed], view.method, layer, cache, result.fingerprint
    )
    for i, found in zip(changed, fresh, strict=True):
        maps[i] = found
    return maps


def card_html(
    path: str,
    caption: tuple[str, str],
    panels: Iterable[tuple[str, str]],
    badges: str = "",
    problem: str = "",
    panel_badges: Sequence[str] = (),
) -> str:
    """One gallery card's file name, caption, panels (data URLs) and badges as escaped HTML;
    ``problem``, when given, is shown in place of the panels. ``panel_badges`` are HTML made
    here (faithfulness badges, :mod:`dashboard.parts.badges`), shown under each panel's caption.

    The whole page of cards is one element, which keeps a click on a cell quick to render even
    with many people on one server. Every text is escaped: file and class names, tags come from
    the dataset and from users, never trusted as markup.
    """
    extra = list(panel_badges)
    figures = "".join(
        f'<figure style="{_FIGURE}"><img src="{escape(url)}" alt="{escape(label)}" '
        f'style="{_IMG}"><figcaption style="{_CAPTION}">{escape(label)}</figcaption>'
        f"{_badge_row(extra[i] if i < len(extra) else '')}</figure>"
        if url
        else f'<figure style="{_FIGURE}"><figcaption style="{_CAPTION}">no map</figcaption>'
        "</figure>"
        for i, (url, label) in enumerate(panels)
    )
    bold, rest = caption
    return (
        f'<div class="cam-card" style="{_CARD}">'
        f'<p style="margin:0 0 .25rem"><strong>{escape(path)}</strong></p>'
        f'<p style="{_CAPTION}"><b>{escape(bold)}</b>{escape(rest)}</p>'
        + (
            f'<p class="cam-card-problem" style="{_PROBLEM}">{escape(problem)}</p>'
            if problem
            else f'<div style="display:flex;gap:.75rem">{figures}</div>'
        )
        + (f'<p style="{_CAPTION}">{escape(badges)}</p>' if badges else "")
        + "</div>"
    )


def _badge_row(badge: str) -> str:
    return f'<div class="cam-fb-row" style="{_CAPTION}">{badge}</div>' if badge else ""


_GRID = "display:grid;grid-template-columns:repeat(2,minmax(0,1fr));gap:1rem"
_CARD = "border:1px solid rgba(49,51,63,.2);border-radius:.5rem;padding:1rem"
_FIGURE = "flex:1 1 0;min-width:0;margin:0;text-align:center"
_IMG = "width:100%;height:auto;image-rendering:pixelated;border-radius:.25rem"
_PROBLEM = "margin:.5rem 0;padding:.5rem .75rem;border-radius:.25rem;background:#fff3cd"
_CAPTION = "font-size:.875rem;color:rgba(49,51,63,.6);margin:.25rem 0"


def rows_csv(rows: pd.DataFrame, names: tuple[str, ...]) -> bytes:
    """``rows`` as CSV, with class names instead of indices (a download button's data)."""
    out = rows.assign(true=[names[i] for i in rows["true"]], pred=[names[i] for i in rows["pred"]])
    return out.to_csv(index=False).encode()
