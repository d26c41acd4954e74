"""Patterns as a user sees them: pattern cards, the cell view's strip and its pattern filter.

The ranking itself is computed once per evaluation on a thread of its own and stored beside the
result (:func:`dashboard.state.analyses.patterns`). Up to
:data:`~dashboard.state.analyses.WAIT_FOR_PATTERNS_UP_TO` images a page waits for it (well under
a second on the samples); past that it is drawn at once and says the patterns are being found.
"""

from __future__ import annotations

from dataclasses import replace
from html import escape
from urllib.parse import urlencode

import numpy as np
import streamlit as st

from core import Results
from core.analysis.patterns import Pattern
from core.data.datasets import ImageDataset
from dashboard.state import analyses, resources
from dashboard.state.url import bind
from dashboard.state.view_state import ViewState

__all__ = [
    "CELL_WAITS_UP_TO",
    "cell_link",
    "cell_patterns",
    "display_map",
    "grid",
    "panels",
    "pattern_card",
    "pattern_filter",
    "strip_cards",
]

#: A click on a cell waits for the patterns up to this many images (then the strip appears once
#: they are found).
CELL_WAITS_UP_TO = 50_000


def cell_link(view: ViewState, pattern: Pattern) -> str:
    """A relative link to the Error-analysis cell view filtered to ``pattern`` (a deep link)."""
    query = {
        "model": view.model,
        "dataset": view.dataset,
        "cell": f"{pattern.true},{pattern.pred}",
        "pattern": str(pattern.cluster),
    }
    return "./?" + urlencode(query)


def display_map(mean_map: np.ndarray) -> np.ndarray:
    """A mean map (sums to 1) stretched to [0, 1] for an overlay."""
    low, high = float(mean_map.min()), float(mean_map.max())
    return (mean_map - low) / (high - low) if high > low else np.zeros_like(mean_map)


def panels(
    dataset: ImageDataset, result: Results, pattern: Pattern, opacity: float
) -> tuple[list[str], str]:
    """Data URLs of the pattern's example image and its two mean maps over it, and the example's
    path; empty URLs when the image cannot be read now."""
    if not pattern.images:
        return ["", "", ""], ""
    path = str(result.manifest.column("path")[int(pattern.rows[0])].as_py())
    maps = [display_map(pattern.pred_map), display_map(pattern.true_map)]
    try:
        return resources.panel_cache().panels(dataset, path, list(maps), opacity), path
    except Exception:  # the file changed or vanished since the evaluation
        return ["", "", ""], path


def pattern_card(
    pattern: Pattern,
    names: tuple[str, ...],
    urls: list[str],
    example: str,
    link: str | None,
    small: bool = False,
    label: str = "",
) -> str:
    """One pattern as HTML: heading (a link to its images when ``link``) with ``label`` (HTML:
    its causal test's verdict), counts, score and centroid, and its mean predicted- and
    true-class maps over the example image."""
    true, pred = names[pattern.true], names[pattern.pred]
    other = "runner-up" if pattern.diagonal else f"true {true}"
    title = (
        f"Pattern {pattern.cluster}"
        if small
        else f"#{pattern.rank + 1} · true {true} → predicted {pred}"
    )
    heading = (
        f'<a class="pattern-link" href="{escape(link)}" target="_self">{escape(title)}</a>'
        if link
        else escape(title)
    )
    flag = " · flagged" if pattern.flagged else ""
    x, y = pattern.centroid
    facts = (
        f"{pattern.images:,} of {pattern.cell_images:,} images · score {pattern.score:.1f}{flag}"
        + ("" if small else f" · pattern {pattern.cluster} of {pattern.clusters_in_cell}")
        + f" · centre ({x:.2f}, {y:.2f})"
    )
    labels = [f"mean map · predicted {pred}", f"mean map · {other}"]
    figures = "".join(
        f'<figure style="{_FIGURE}"><img src="{escape(url)}" alt="{escape(label)}" '
        f'style="{_IMG}"><figcaption style="{_CAPTION}">{escape(label)}</figcaption></figure>'
        if url
        else f'<figure style="{_FIGURE}"><figcaption style="{_CAPTION}">{escape(label)}: '
        "image unavailable</figcaption></figure>"
        for url, label in zip(urls[1:], labels, strict=True)
    )
    return (
        f'<div class="pattern-card" data-true="{pattern.true}" data-pred="{pattern.pred}" '
        f'data-pattern="{pattern.cluster}" style="{_CARD}">'
        f'<p style="margin:0 0 .25rem;font-weight:600">{heading} {label}</p>'
        f'<p style="{_CAPTION}">{escape(facts)}</p>'
        f'<div style="display:flex;gap:.5rem">{figures}</div>'
        f'<p style="{_CAPTION}">over {escape(example)}</p></div>'
    )


def grid(cards: list[str], columns: int, css_class: str = "pattern-grid") -> str:
    """Cards in ``columns`` equal columns, or (0) as many columns of 240 px as fit."""
    template = f"repeat({columns},minmax(0,1fr))" if columns else "repeat(auto-fill,240px)"
    style = f"display:grid;grid-template-columns:{template};gap:1rem"
    return f'<div class="{css_class}" style="{style}">{"".join(cards)}</div>'


_CARD = "border:1px solid rgba(49,51,63,.2);border-radius:.5rem;padding:.75rem"
_FIGURE = "flex:1 1 0;min-width:0;margin:0;text-align:center"
_IMG = "width:100%;height:auto;image-rendering:pixelated;border-radius:.25rem"
_CAPTION = "font-size:.8rem;color:rgba(49,51,63,.6);margin:.2rem 0"


# ----------------------------------------------------------------------- the cell view's strip


def cell_patterns(
    config_path: str, view: ViewState, result: Results
) -> tuple[list[Pattern], Pattern | None, str]:
    """The selected cell's patterns, the one the URL filters by (None: all images), and a note
    to show ("" when none): patterns not found yet, or a pattern the cell does not have."""
    if view.cell is None:
        return [], None, ""
    # a click on a cell waits for the patterns of a small result only, a link to a pattern always
    up_to = len(result.index) if view.pattern else CELL_WAITS_UP_TO
    found, reason = analyses.patterns_or_reason(
        config_path, view.model, view.dataset, result, up_to
    )
    if found is None:
        busy = "Patterns are being found; all of the cell's images are shown."
        return [], None, (reason or busy) if view.pattern else ""
    of_cell = found.of_cell(*view.cell)
    chosen = next((p for p in of_cell if p.cluster == view.pattern), None)
    if view.pattern and chosen is None:
        return of_cell, None, f"This cell has no pattern {view.pattern}; all its images are shown."
    return of_cell, chosen, ""


def strip_cards(
    config_path: str,
    view: ViewState,
    result: Results,
    of_cell: list[Pattern],
    labels: list[str] | None = None,
) -> list[str]:
    """The strip's cards (HTML): the whole cell's ('' without maps), then one per pattern of
    ``of_cell`` with its ``labels`` (verdicts); [] when the cell has no pattern."""
    if not of_cell:
        return []
    dataset = resources.dataset(config_path, view.dataset, view.model)
    cards = [_whole_cell(dataset, result, of_cell[0], view.opacity)]
    for pattern, label in zip(of_cell, labels or [""] * len(of_cell), strict=True):
        urls, example = panels(dataset, result, pattern, view.opacity)
        cards.append(
            pattern_card(pattern, result.classes, urls, example, None, small=True, label=label)
        )
    return cards


def _whole_cell(dataset: ImageDataset, result: Results, first: Pattern, opacity: float) -> str:
    """A card with the mean maps of all of the cell's images, over the first pattern's example."""
    from core.analysis.patterns import cell_maps

    means = cell_maps(result, first.true, first.pred)
    if means is None:
        return ""
    whole = replace(
        first,
        cluster=0,
        rows=first.rows[:1],
        score=0.0,
        pred_map=means[0],
        true_map=means[1],
        centroid=(float("nan"), float("nan")),
    )
    urls, example = panels(dataset, result, whole, opacity)
    names = result.classes
    other = "runner-up" if first.diagonal else f"true {names[first.true]}"
    labels = [f"mean map · predicted {names[first.pred]}", f"mean map · {other}"]
    figures = "".join(
        f'<figure style="{_FIGURE}"><img src="{escape(url)}" alt="{escape(label)}" '
        f'style="{_IMG}"><figcaption style="{_CAPTION}">{escape(label)}</figcaption></figure>'
        for url, label in zip(urls[1:], labels, strict=True)
        if url
    )
    return (
        f'<div class="pattern-card cell-mean" style="{_CARD}">'
        f'<p style="margin:0 0 .25rem;font-weight:600">Whole cell</p>'
        f'<p style="{_CAPTION}">all {first.cell_images:,} images</p>'
        f'<div style="display:flex;gap:.5rem">{figures}</div>'
        f'<p style="{_CAPTION}">over {escape(example)}</p></div>'
    )


def pattern_filter(of_cell: list[Pattern], chosen: Pattern | None) -> None:
    """A select box: all of the cell's images, or one pattern's (its number lives in the URL)."""
    options = [0, *(p.cluster for p in of_cell)]
    by_number = {p.cluster: p for p in of_cell}

    def label(number: int) -> str:
        if number == 0:
            return "(all images)"
        p = by_number[number]
        return f"pattern {number}: {p.images:,} images, score {p.score:.1f}"

    bind(
        st.selectbox,
        "Only images of pattern",
        "pattern",
        chosen.cluster if chosen is not None else 0,
        options,
        ("page",),
        format_func=label,
    )
