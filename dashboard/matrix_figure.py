"""The clickable confusion-matrix figure (pure Plotly; no streamlit).

A ``go.Heatmap`` gives the looks, but Streamlit returns no selection for heatmap clicks
(streamlit#8760, #15042), so a transparent ``go.Scatter`` of square markers covers every cell
and takes the clicks. Axes have fixed ranges and the figure a fixed size, so each marker
exactly covers its cell.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go

__all__ = ["cell_of_point", "matrix_figure", "overview_figure", "point_of_cell"]

SELECTED_TINT = "rgba(255, 111, 0, 0.55)"
MARGIN = {"l": 120, "r": 20, "t": 30, "b": 120}


def point_of_cell(cell: tuple[int, int], shown: Sequence[int]) -> int | None:
    """Scatter point index of a (true, pred) cell, or None when a class is not shown."""
    if cell[0] not in shown or cell[1] not in shown:
        return None
    m = len(shown)
    return list(shown).index(cell[0]) * m + list(shown).index(cell[1])


def cell_of_point(index: int, shown: Sequence[int]) -> tuple[int, int]:
    """(true, pred) class indices of a scatter point index."""
    row, col = divmod(index, len(shown))
    return int(shown[row]), int(shown[col])


def matrix_figure(
    counts: np.ndarray,
    classes: Sequence[str],
    color: str = "count",
    shown: Sequence[int] | None = None,
    selected: tuple[int, int] | None = None,
    flagged: np.ndarray | None = None,
) -> go.Figure:
    """Confusion matrix ``counts`` [true, pred] restricted to the ``shown`` classes.

    ``color`` is ``count``, ``row`` (share of the true class) or ``col`` (share of the
    predicted class); ``selected`` is highlighted; ``flagged`` [true, pred] counts of suspected
    label errors go into the hover text.
    """
    shown = list(range(len(classes))) if shown is None else list(shown)
    sub = counts[np.ix_(shown, shown)]
    row_share = _share(counts, axis=1)[np.ix_(shown, shown)]
    col_share = _share(counts, axis=0)[np.ix_(shown, shown)]
    z = {"count": sub, "row": row_share, "col": col_share}[color]
    names = [classes[i] for i in shown]
    m = len(shown)
    side = _plot_side(m)
    fig = go.Figure()
    fig.add_trace(_heatmap(z, sub, m, color))
    suspects = flagged[np.ix_(shown, shown)] if flagged is not None else None
    fig.add_trace(_click_layer(sub, row_share, names, side / m, suspects))
    point = point_of_cell(selected, shown) if selected is not None else None
    fig.data[1].selectedpoints = [point] if point is not None else None
    axis = {"tickvals": list(range(m)), "ticktext": names, "fixedrange": True, "showgrid": False}
    font = 12 if m <= 20 else 9 if m <= 50 else 7
    fig.update_layout(
        width=side + MARGIN["l"] + MARGIN["r"],
        height=side + MARGIN["t"] + MARGIN["b"],
        margin=MARGIN,
        xaxis={**axis, "title": "predicted class", "range": [-0.5, m - 0.5], "tickangle": -45},
        yaxis={**axis, "title": "true class", "range": [m - 0.5, -0.5]},
        font={"size": font},
        clickmode="event+select",
        dragmode=False,
        showlegend=False,
        plot_bgcolor="white",
    )
    return fig


def _plot_side(m: int) -> int:
    return int(min(760, max(320, 44 * m)))


def _share(counts: np.ndarray, axis: int) -> np.ndarray:
    totals = counts.sum(axis=axis, keepdims=True)
    return np.divide(counts, totals, out=np.zeros(counts.shape, float), where=totals > 0)


def _heatmap(z: np.ndarray, counts: np.ndarray, m: int, color: str) -> go.Heatmap:
    return go.Heatmap(
        z=z,
        x=list(range(m)),
        y=list(range(m)),
        text=counts if m <= 30 else None,
        texttemplate="%{text:,}" if m <= 30 else None,
        colorscale="Blues",
        colorbar={"title": "count" if color == "count" else "share"},
        hoverinfo="skip",
        xgap=1,
        ygap=1,
    )


def _click_layer(
    counts: np.ndarray,
    row_share: np.ndarray,
    names: Sequence[str],
    cell_px: float,
    flagged: np.ndarray | None = None,
) -> go.Scatter:
    m = len(names)
    rows, cols = np.divmod(np.arange(m * m), m)
    custom = np.stack(
        [
            np.asarray(names, dtype=object)[rows],
            np.asarray(names, dtype=object)[cols],
            counts[rows, cols],
            np.round(100 * row_share[rows, cols], 1),
            flagged[rows, cols] if flagged is not None else np.zeros(m * m, int),
        ],
        axis=1,
    )
    suspects = "<br>suspected label errors: %{customdata[4]}" if flagged is not None else ""
    return go.Scatter(
        x=cols,
        y=rows,
        mode="markers",
        marker={
            "symbol": "square",
            "size": cell_px,
            "color": "rgba(0,0,0,0)",
            "line": {"width": 0},
        },
        selected={"marker": {"color": SELECTED_TINT}},
        unselected={"marker": {"opacity": 1}},
        customdata=custom,
        hovertemplate=(
            "true: %{customdata[0]}<br>predicted: %{customdata[1]}<br>"
            "count: %{customdata[2]}<br>%{customdata[3]}% of row" + suspects + "<extra></extra>"
        ),
    )


def overview_figure(
    sums: np.ndarray, labels: Sequence[str], selected: tuple[int, int] | None = None
) -> go.Figure:
    """The block overview of a large matrix: log-coloured block sums, a click selects a block.

    Built like :func:`matrix_figure` (same click layer), at most a few thousand points.
    """
    fig = matrix_figure(sums, labels, "count", None, selected)
    fig.data[0].z = np.log1p(sums)
    fig.data[0].colorbar = {"title": "log count"}
    fig.data[0].colorscale = "Viridis"
    m = len(labels)
    fig.update_layout(
        xaxis={"title": "predicted classes", "showticklabels": m <= 20},
        yaxis={"title": "true classes", "showticklabels": m <= 20},
        width=560,
        height=560,
        margin={"l": 60, "r": 20, "t": 30, "b": 60},
    )
    fig.data[1].marker.size = (560 - 80) / m
    return fig
