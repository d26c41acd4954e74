"""The Map page's figure: the evaluated images as points of their embeddings' 2-D layout.

The layout is the best there is now (:func:`dashboard.state.analyses.map_layout`: PCA until the
UMAP pass is done). The figure and the drawn sample are keyed by the evaluation's fingerprint
and kept in ``st.cache_resource`` (built once per view, shared, never copied per rerun).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import streamlit as st

from core.analysis.embedding_map import MAX_POINTS, density, density_png, drawn_sample
from core.analysis.slices import SliceError
from core.results import Results
from dashboard.state import analyses, resources, slicing

if TYPE_CHECKING:
    import plotly.graph_objects as go

__all__ = ["COLOURS", "MAP_PATTERNS", "Drawn", "drawn", "figure"]

COLOURS = {
    "outcome": "right / wrong",
    "true": "true class",
    "pred": "predicted class",
    "label": "suspected label error",
    "pattern": "pattern (the most suspicious)",
}
_RIGHT, _WRONG = "#9aa5b1", "#d62728"
_PALETTE = (
    *("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2"),
    *("#7f7f7f", "#bcbd22", "#17becf", "#393b79", "#637939", "#8c6d31", "#843c39"),
    *("#7b4173", "#3182bd", "#e6550d", "#31a354", "#756bb1", "#636363"),
)
POINT_SIZE = 5  # pixels across
MAP_PATTERNS = 10  # patterns coloured on the map: a legend people can still read
_GREYS = ("#7f7f7f", "#636363")  # too close to the points in no pattern
_RING = {"size": 11, "color": "rgba(0,0,0,0)", "line": {"width": 2, "color": "#000"}}


@dataclass(frozen=True)
class Drawn:
    """What the figure draws: a sample of positions (all up to the limit) and a density."""

    rows: np.ndarray  # positions into the evaluated rows
    grid: tuple[np.ndarray, np.ndarray, np.ndarray] | None  # density of all points, when sampled


@st.cache_resource(show_spinner=False, max_entries=16)
def drawn(
    config_path: str, model: str, dataset: str, fingerprint: str, method: str, limit: int
) -> Drawn:
    """Positions drawn as points (every error kept past ``limit``) and, past it, a density."""
    result = resources.evaluation(config_path, model, dataset)
    wrong = result.true != result.pred
    rows = drawn_sample(wrong, limit)
    if len(rows) == len(wrong):
        return Drawn(rows, None)
    current = analyses.map_layout(config_path, model, dataset, fingerprint)[0]
    if current.method != method:
        current = analyses.pca_layout(config_path, model, dataset, fingerprint)
    return Drawn(rows, density(current.xy))


@st.cache_resource(show_spinner=False, max_entries=32)
def figure(
    config_path: str,
    model: str,
    dataset: str,
    fingerprint: str,
    method: str,
    colour: str,
    cell: tuple[int, int] | None,
    where: str = "",
) -> go.Figure:
    """The map's Plotly figure, built once per view and shared (never mutated afterwards);
    with ``where``, only the slice's points (the density layer stays that of every image).

    Points carry their coordinates (float32 typed arrays) and a short hover text with the class
    names (at most :data:`MAX_POINTS` of them are drawn), so the figure serialises in
    milliseconds on every rerun; a selection is resolved on the server from its shape, not from
    the points the browser sends back.
    """
    import plotly.graph_objects as go

    key = (config_path, model, dataset, fingerprint)
    result = resources.evaluation(config_path, model, dataset)
    current = analyses.map_layout(*key)[0]
    xy = current.xy if current.method == method else analyses.pca_layout(*key).xy  # as asked
    shown = drawn(*key, method, MAX_POINTS)
    rows = shown.rows
    if where:
        try:
            flt = slicing.slice_filter(config_path, model, dataset, result, where)
        except SliceError:  # the slice bar says why; every point is drawn
            flt = None
        if flt is not None:
            rows = rows[flt.positions[rows]]
    true, pred = result.true[rows], result.pred[rows]
    names = np.asarray(result.classes, dtype=str)
    text = np.char.add(np.char.add(names[true], " → "), names[pred]) if len(rows) else None
    hover = "true → predicted: %{text}<extra></extra>"
    fig = go.Figure()
    if shown.grid is not None:
        _draw_density(fig, *shown.grid)
    for label, mask, color in _groups(key, result, rows, true, pred, colour):
        if not mask.any():
            continue
        fig.add_trace(
            go.Scatter(
                x=xy[rows[mask], 0], y=xy[rows[mask], 1], mode="markers", name=label,
                marker={"size": POINT_SIZE, "color": color, "opacity": 0.8},
                text=None if text is None else text[mask], hovertemplate=hover,
            )
        )  # fmt: skip
    if cell is not None:
        mask = (true == cell[0]) & (pred == cell[1])
        fig.add_trace(
            go.Scatter(
                x=xy[rows[mask], 0], y=xy[rows[mask], 1], mode="markers",
                name=f"cell {names[cell[0]]} → {names[cell[1]]}", marker=_RING,
                text=None if text is None else text[mask], hovertemplate=hover,
            )
        )  # fmt: skip
    fig.update_layout(
        height=620,
        margin={"l": 10, "r": 10, "t": 10, "b": 10},
        dragmode="select",
        uirevision=fingerprint,
        # what the points are (this function's arguments): Streamlit hands the browser's Plotly
        # the same figure a second time as it mounts the chart, and an unchanged datarevision
        # lets Plotly keep the drawn points instead of computing and drawing them again
        datarevision=f"{fingerprint}:{method}:{colour}:{cell}:{where}",
        showlegend=True,  # also when a sample holds only errors: the legend names them
        legend={"itemsizing": "constant", "orientation": "h", "y": -0.02, "yanchor": "top"},
        xaxis={"showticklabels": False, "title": None},
        yaxis={"showticklabels": False, "title": None},
        plot_bgcolor="white",
    )
    return fig


def _draw_density(fig: go.Figure, counts: np.ndarray, xs: np.ndarray, ys: np.ndarray) -> None:
    """Every image's density as one picture under the points (a heatmap of the same cells took
    a browser 0.1 s longer to draw), the axes spanning it."""
    import base64

    half_x, half_y = (xs[1] - xs[0]) / 2, (ys[1] - ys[0]) / 2  # bin centres → the outer edges
    (x0, x1), (y0, y1) = (xs[0] - half_x, xs[-1] + half_x), (ys[0] - half_y, ys[-1] + half_y)
    fig.add_layout_image(
        source="data:image/png;base64," + base64.b64encode(density_png(counts)).decode(),
        xref="x", yref="y", x=x0, y=y1, sizex=x1 - x0, sizey=y1 - y0,
        sizing="stretch", layer="below",
    )  # fmt: skip
    fig.update_xaxes(range=[x0, x1])
    fig.update_yaxes(range=[y0, y1])


def _groups(key, result: Results, rows, true, pred, colour: str):  # type: ignore[no-untyped-def]
    """(legend label, mask over the drawn points, colour) per trace."""
    if colour == "outcome":
        return [("right", true == pred, _RIGHT), ("wrong", true != pred, _WRONG)]
    if colour == "label":
        flags = analyses.quality(*key).is_issue[rows]
        return [("label looks right", ~flags, _RIGHT), ("suspected label error", flags, _WRONG)]
    if colour == "pattern":
        return _pattern_groups(key, result, rows)
    values = true if colour == "true" else pred
    k = result.num_classes
    if k <= len(_PALETTE):
        return [(result.classes[c], values == c, _PALETTE[c]) for c in range(k)]
    # many classes: one trace, classes spread over a colour scale (the hover names them)
    return [(COLOURS[colour], np.ones(len(rows), bool), values.astype(float))]


def _pattern_groups(key, result: Results, rows):  # type: ignore[no-untyped-def]
    """One trace per pattern among the :data:`MAP_PATTERNS` most suspicious, by rank, over
    the images in none of them (grey, a colour no pattern gets)."""
    found, _ = analyses.patterns_or_reason(*key[:3], result)
    if found is None:  # the page draws "pattern" only once they are found
        return [("patterns not found", np.ones(len(rows), bool), _RIGHT)]
    top = min(len(found), MAP_PATTERNS)
    palette = [c for c in _PALETTE if c not in _GREYS]
    ranks = found.rank_of_rows(result.index[rows], top=top)
    names = result.classes
    groups = [("in none of these patterns", ranks == -1, _RIGHT)]
    for i in range(top):
        p = found[i]
        number = f" ({p.cluster} of {p.clusters_in_cell})" if p.clusters_in_cell > 1 else ""
        label = f"#{i + 1} {names[p.true]} → {names[p.pred]}{number}"
        groups.append((label, ranks == i, palette[i]))
    return groups
