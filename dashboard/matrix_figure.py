"""The clickable confusion-matrix chart: a Vega-Lite spec and its table (no streamlit).

One rectangle per cell, row-major over the shown classes, with a point selection on the
(true, predicted) class indices: a click selects the cell under the pointer (Vega resolves the
click from the pointer's position, so a click is never given to a cell the mouse has left), and
the selection starts at the URL's cell. Vega-Lite is what Streamlit draws with anyway; a new
visitor's browser loads and starts it in about a second less than Plotly on this kind of
machine (``bench/scale.py --browser``). The layout is fixed (no autosize, fixed padding), so a
cell's position in the page follows from the spec, and the spec is identical across reruns.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["MatrixChart", "cell_of_selection", "matrix_chart", "overview_chart"]

PARAM = "cell"  # the selection's name in the spec and in Streamlit's selection state
SELECTED_STROKE = "#ff6f00"
MARGIN = {"left": 120, "top": 30, "right": 90, "bottom": 120}  # axes, titles and the legend


@dataclass(frozen=True)
class MatrixChart:
    """What ``st.vega_lite_chart(chart.data, chart.spec)`` draws: one row of ``data`` per cell
    (row-major over the shown classes: ``t`` true and ``p`` predicted class index)."""

    data: pd.DataFrame
    spec: dict[str, Any]


def cell_of_selection(selection: Mapping[str, Any]) -> tuple[int, int] | None:
    """(true, pred) class indices of a chart's selection state, or None when nothing is selected."""
    points = selection.get(PARAM) or []
    if not points:
        return None
    return int(points[0]["t"]), int(points[0]["p"])


def matrix_chart(
    counts: np.ndarray,
    classes: Sequence[str],
    color: str = "count",
    shown: Sequence[int] | None = None,
    selected: tuple[int, int] | None = None,
    flagged: np.ndarray | None = None,
) -> MatrixChart:
    """Confusion matrix ``counts`` [true, pred] restricted to the ``shown`` classes.

    ``color`` is ``count``, ``row`` (share of the true class) or ``col`` (share of the
    predicted class); ``selected`` is outlined; ``flagged`` [true, pred] counts of suspected
    label errors go into the tooltip.
    """
    shown = list(range(len(classes))) if shown is None else list(shown)
    index = np.ix_(shown, shown)
    row_share = _share(counts, axis=1)[index]
    value = {"count": counts[index], "row": row_share, "col": _share(counts, axis=0)[index]}
    names = [classes[i] for i in shown]
    data = _cells(counts[index], value[color], row_share, shown, names)
    if flagged is not None:
        data["flagged"] = flagged[index].ravel()
    m = len(shown)
    spec = _spec(
        data,
        names,
        side=_plot_side(m),
        margin=MARGIN,
        legend="count" if color == "count" else "share",
        scheme="blues",
        font=12 if m <= 20 else 9 if m <= 50 else 7,
        labels=True,
        text=m <= 30,
        selected=selected,
        flagged=flagged is not None,
    )
    return MatrixChart(data, spec)


def overview_chart(
    sums: np.ndarray, labels: Sequence[str], selected: tuple[int, int] | None = None
) -> MatrixChart:
    """The block overview of a large matrix: log-coloured block sums, a click selects a block.

    Built like :func:`matrix_chart` (same selection), one rectangle per block.
    """
    m = len(labels)
    data = _cells(sums, np.log1p(sums), _share(sums, axis=1), range(m), labels)
    spec = _spec(
        data,
        labels,
        side=480,
        margin={"left": 60, "top": 30, "right": 90, "bottom": 60},
        legend="log count",
        scheme="viridis",
        font=9,
        labels=m <= 20,
        text=False,
        selected=selected,
        flagged=False,
        titles=("true classes", "predicted classes"),
    )
    return MatrixChart(data, spec)


def _plot_side(m: int) -> int:
    return int(min(760, max(320, 44 * m)))


def _share(counts: np.ndarray, axis: int) -> np.ndarray:
    totals = counts.sum(axis=axis, keepdims=True)
    return np.divide(counts, totals, out=np.zeros(counts.shape, float), where=totals > 0)


def _cells(
    counts: np.ndarray,
    value: np.ndarray,
    row_share: np.ndarray,
    shown: Sequence[int],
    names: Sequence[str],
) -> pd.DataFrame:
    """One row per cell of the shown classes (``names``: theirs, in order), row-major."""
    m = len(shown)
    rows, cols = np.divmod(np.arange(m * m), m)
    ids = np.asarray(shown, dtype=np.int64)
    labels = np.asarray(names, dtype=object)
    return pd.DataFrame(
        {
            "t": ids[rows],
            "p": ids[cols],
            "true": labels[rows],
            "pred": labels[cols],
            "count": np.asarray(counts).ravel().astype(np.int64),
            "value": np.asarray(value, dtype=float).ravel(),
            "share": np.round(np.asarray(row_share, dtype=float).ravel(), 4),
        }
    )


def _spec(
    data: pd.DataFrame,
    names: Sequence[str],
    side: int,
    margin: Mapping[str, int],
    legend: str,
    scheme: str,
    font: int,
    labels: bool,
    text: bool,
    selected: tuple[int, int] | None,
    flagged: bool,
    titles: tuple[str, str] = ("true class", "predicted class"),
) -> dict[str, Any]:
    select: dict[str, Any] = {
        "name": PARAM,
        # a click picks the cell under the pointer; clicking it again keeps it (no toggle)
        "select": {
            "type": "point",
            "fields": ["t", "p"],
            "on": "click",
            "clear": False,
            "toggle": False,
        },
    }
    if selected is not None:
        select["value"] = [{"t": int(selected[0]), "p": int(selected[1])}]
    tooltip = [
        {"field": "true", "title": "true"},
        {"field": "pred", "title": "predicted"},
        {"field": "count", "title": "count", "format": ","},
        {"field": "share", "title": "of row", "format": ".1%"},
    ]
    if flagged:
        tooltip.append({"field": "flagged", "title": "suspected label errors"})
    axis = {"labelFontSize": font, "labelLimit": margin["left"] - 10, "labels": labels,
            "ticks": labels, "domain": False}  # fmt: skip
    layers: list[dict[str, Any]] = [
        {
            "mark": {"type": "rect", "cursor": "pointer"},
            "params": [select],
            "encoding": {
                "color": {
                    "field": "value",
                    "type": "quantitative",
                    "title": legend,
                    "scale": {"scheme": scheme},
                },
                "stroke": {
                    "condition": {"param": PARAM, "empty": False, "value": SELECTED_STROKE},
                    "value": None,
                },
                "strokeWidth": {"value": 3},
                "tooltip": tooltip,
            },
        }
    ]
    if text:
        high = 0.6 * float(data["value"].max() or 1)
        layers.append(
            {
                "mark": {"type": "text", "fontSize": font, "cursor": "pointer"},
                "encoding": {
                    "text": {"field": "count", "type": "quantitative", "format": ","},
                    "color": {
                        "condition": {"test": f"datum.value > {high!r}", "value": "white"},
                        "value": "black",
                    },
                    "tooltip": tooltip,
                },
            }
        )
    return {
        "width": side,
        "height": side,
        "autosize": {"type": "none"},
        "padding": dict(margin),
        "config": {"view": {"stroke": None}},
        # SVG at every size (Streamlit would switch to a canvas past ~2,000 rows): one element
        # per cell, carrying its cell, so the page's structure does not depend on the size;
        # 10,000 cells (100 classes) draw as fast either way
        "usermeta": {"embedOptions": {"renderer": "svg"}},
        "encoding": {
            "x": {
                "field": "pred",
                "type": "nominal",
                "scale": {"domain": list(names), "paddingInner": 0.03},
                "axis": {**axis, "title": titles[1], "labelAngle": -45},
            },
            "y": {
                "field": "true",
                "type": "nominal",
                "scale": {"domain": list(names), "paddingInner": 0.03},
                "axis": {**axis, "title": titles[0]},
            },
        },
        "layer": layers,
    }
