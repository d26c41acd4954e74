"""The confusion matrix: its clickable chart, the classes it shows, the overview of a large
matrix, its sidebar settings, and what a click on a cell selects (the URL's ``cell``).

The chart is a Vega-Lite spec and its table, built without streamlit (:func:`matrix_chart`). One
rectangle per cell, row-major over the shown classes, with a point selection on the
(true, predicted) class indices: a click selects the cell under the pointer (Vega resolves the
click from the pointer's position, so a click is never given to a cell the mouse has left), and
the selection starts at the URL's cell. Vega-Lite is what Streamlit draws with anyway; a new
visitor's browser loads and starts it in about a second less than Plotly on this kind of
machine (``bench/scale.py --browser``). The layout is fixed (no autosize, fixed padding), so a
cell's position in the page follows from the spec, and the spec is identical across reruns.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import pandas as pd
import streamlit as st

from core import Results, block_classes, block_sums, focus_classes, most_confused_classes
from dashboard.parts.page import folded
from dashboard.state import analyses, corrections, resources, slicing
from dashboard.state.polling import until_done
from dashboard.state.slicing import SliceFilter
from dashboard.state.url import bind, set_params
from dashboard.state.view_state import COLOR_MODES, ViewState

__all__ = [
    "EXPLORER",
    "SELECTED_STROKE",
    "MatrixChart",
    "cell_of_selection",
    "matrix_chart",
    "matrix_section",
    "matrix_settings",
    "overview_chart",
]

PARAM = "cell"  # the selection's name in the spec and in Streamlit's selection state
SELECTED_STROKE = "#ff6f00"
MARGIN = {"left": 120, "top": 30, "right": 90, "bottom": 120}  # axes, titles and the legend
TOP_N_THRESHOLD = 30  # past this many classes, offer the "most confused classes" view
TOP_N_OPTIONS = [0, 10, 20, 30, 50]
FULL_MATRIX_LIMIT = 100  # past this many classes "all" is not offered: the overview replaces it
DEFAULT_TOP = 20  # what a large matrix shows first
OVERVIEW_BLOCKS = 40  # the overview of a large matrix: at most 40 × 40 clickable blocks
MARK_POLL_SECONDS = 2.0  # how often the chart looks for a large evaluation's label-error marks
#: The key of the fragment a page draws :func:`matrix_section` in, with what a click on the
#: matrix shows (``views/analysis.py``: the selected cell's gallery). The chart sits in a
#: fragment of its own (it is marked in place), so a click on it asks for this one's rerun.
EXPLORER = "explorer"


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


# ----------------------------------------------------------------------------- on the page


def matrix_section(
    config_path: str, view: ViewState, result: Results, flt: SliceFilter | None = None
) -> list[int]:
    """The matrix of the view's classes (a click selects a cell: the URL's ``cell``), its
    caption and, for many classes, the class finder and the overview; the classes shown.
    With ``flt``, of the slice's images only. Drawn in the fragment keyed :data:`EXPLORER`."""
    counts = resources.matrix(config_path, view.model, view.dataset)
    if flt is not None:
        counts = slicing.sliced_matrix(result, flt)
    fixed = corrections.active(config_path, view.dataset, result)  # the URL's labels=corrected
    if fixed is not None:
        counts = fixed.matrix(flt)
    classes = result.classes
    n = len(classes)
    if n > TOP_N_THRESHOLD:
        _find_class(view, result)
    shown, why = _shown_classes(view, result, counts)
    if why:
        st.caption(why)
    found = (config_path, view.model, view.dataset, result.fingerprint)
    marked = analyses.quality_ready(*found)  # else drawn now, marked when they are found
    # the evaluation's fingerprint stands for the counts: new weights or images, new figure
    scope = (result.fingerprint, view.color, tuple(shown), flt.param if flt else "")
    scope += (fixed.stamp if fixed is not None else "",)
    state = st.session_state
    build = partial(matrix_chart, counts, classes, view.color, shown)
    marks = partial(_flagged, found, result, flt)
    if state.get("chart_scope") != scope or state.get("chart_cell") != view.cell:
        # A change that did not come from a click on this chart: rebuild it, selection from the URL.
        state["chart_scope"], state["chart_cell"] = scope, view.cell
        state["chart_version"] = state.get("chart_version", 0) + 1
        # A click on the chart reuses this session's chart: the browser keeps what it drew.
        state["chart"] = build(view.cell, marks() if marked else None)
        state["chart_marked"] = marked
    key = f"matrix-{state['chart_version']}"
    # drawn and, while the label errors are found, marked in a fragment of its own
    until_done(_marked_chart, MARK_POLL_SECONDS, not marked)(found, key, build, marks, counts)
    if n > TOP_N_THRESHOLD:
        _overview(view, result, counts)  # after the matrix: the page's first chart is the matrix
    return shown


def _draw(chart: MatrixChart, key: str, on_select: Callable[[], None]) -> None:
    """A matrix chart whose clicks select its cell (``on_select`` reads the selection)."""
    st.vega_lite_chart(
        chart.data,
        chart.spec,
        key=key,
        on_select=on_select,
        selection_mode=PARAM,
        theme=None,
        width="content",
    )


def _marked_chart(
    found: tuple[str, str, str, str],
    key: str,
    build: Callable[[tuple[int, int] | None, np.ndarray | None], MatrixChart],
    marks: Callable[[], np.ndarray],
    counts: np.ndarray,
) -> bool:
    """The chart and its caption (a fragment: :func:`matrix_section`). Past
    :data:`~dashboard.state.analyses.WAIT_FOR_QUALITY_UP_TO` probabilities it is drawn before
    the suspected label errors are found and reruns until they are; then the same chart (same
    key: a click on it, even one made just then, is kept) gets them in its tooltips, and nothing
    else on the page is sent again. Returns whether they are found."""
    state = st.session_state
    marked = analyses.quality_ready(*found)
    if marked and not state.get("chart_marked"):  # found since the chart was built
        state["chart"], state["chart_marked"] = build(state.get("chart_cell"), marks()), True
    _draw(state["chart"], key, partial(_on_click, key))
    st.caption(
        f"{int(counts.sum()):,} images · rows: true class · columns: predicted class"
        + ("" if marked else " · finding suspected label errors (marked when found)…")
    )
    if marked and (unsaved := analyses.quality(*found).unsaved):
        st.caption(f"Suspected label errors are kept in memory while the server runs: {unsaved}")
    return marked


def _flagged(
    found: tuple[str, str, str, str], result: Results, flt: SliceFilter | None
) -> np.ndarray:
    """[true, pred] counts of the suspected label errors (of the slice's images, with ``flt``)."""
    if flt is None:
        return analyses.flagged_matrix(*found)
    return slicing.sliced_matrix(result, flt, analyses.quality(*found).is_issue)


def _on_click(key: str) -> None:
    cell = cell_of_selection(st.session_state[key].selection)
    st.session_state["chart_cell"] = cell  # the chart already shows it: keep the figure as is
    if cell is None:
        set_params({}, reset=("cell", "page", "pattern"))
    else:
        set_params({"cell": f"{cell[0]},{cell[1]}"}, reset=("page", "pattern"))
    st.rerun(EXPLORER)  # not only the chart's fragment: the cell's gallery too


def matrix_settings(view: ViewState, n: int) -> None:
    """Sidebar: how the matrix is coloured and, for many classes, which classes it shows."""
    with st.sidebar:
        st.header("Matrix")
        bind(
            st.selectbox,
            "Colour by",
            "color",
            view.color,
            list(COLOR_MODES),
            format_func=COLOR_MODES.get,
        )
        if n > TOP_N_THRESHOLD:
            options = TOP_N_OPTIONS if n <= FULL_MATRIX_LIMIT else TOP_N_OPTIONS[1:]
            bind(
                st.selectbox,
                "Classes shown",
                "top",
                view.top if view.top in options else (0 if 0 in options else DEFAULT_TOP),
                options,
                ("focus", "block"),
                format_func=lambda k: f"all {n:,}" if k == 0 else f"top {k} most confused",
            )


def _shown_classes(view: ViewState, result: Results, counts) -> tuple[list[int], str]:  # type: ignore[no-untyped-def]
    """Which classes the matrix shows, and a caption saying why."""
    n = result.num_classes
    if n <= TOP_N_THRESHOLD:
        return list(range(n)), ""
    if view.block is not None:
        size = -(-n // OVERVIEW_BLOCKS)
        rows, cols = (block_classes(b, size, n) for b in view.block)
        if rows and cols:
            names = result.classes
            span = f"{names[rows[0]]}…{names[rows[-1]]} × {names[cols[0]]}…{names[cols[-1]]}"
            return sorted(set(rows) | set(cols)), f"Overview block {span}"
    if 0 <= view.focus < n:
        shown = focus_classes(counts, view.focus, DEFAULT_TOP)
        return shown, f"{result.classes[view.focus]} and its most confused classes"
    top = view.top if view.top in TOP_N_OPTIONS else 0
    if top == 0 and n > FULL_MATRIX_LIMIT:
        top = DEFAULT_TOP
    if top == 0:
        return list(range(n)), ""
    shown = most_confused_classes(result.predictions, n, top)
    return shown, f"The {top} most confused of {n:,} classes"


def _find_class(view: ViewState, result: Results) -> None:
    """Type a class name: the matrix shows its row and column with its most confused partners."""
    names = result.classes
    cols = st.columns([3, 1], vertical_alignment="bottom")
    cols[0].selectbox(
        f"Find a class (of {len(names):,})",
        range(len(names)),
        index=view.focus if 0 <= view.focus < len(names) else None,
        format_func=names.__getitem__,
        placeholder="Type a class name…",
        key="find-class",
        on_change=_on_find,
    )
    if view.focus >= 0 or view.block is not None:
        cols[1].button("Most confused", on_click=_clear_focus)


def _clear_focus() -> None:
    st.session_state["find-class"] = None
    set_params({}, reset=("focus", "block"))


def _on_find() -> None:
    picked = st.session_state["find-class"]
    if picked is None:
        set_params({}, reset=("focus",))
    else:
        set_params({"focus": str(picked)}, reset=("block",))


def _overview(view: ViewState, result: Results, counts) -> None:  # type: ignore[no-untyped-def]
    """The whole matrix as blocks of classes; a click on a block zooms the matrix into it.

    Folded: the chart (a few thousand cells) is built and drawn only while it is open, so a
    page load draws one chart, the matrix. Opening it reruns this fragment.
    """
    n = result.num_classes
    box = folded(st, f"Overview of all {n:,} classes: click a block to zoom in", "overview-open")
    if box is None:
        return
    size = -(-n // OVERVIEW_BLOCKS)
    sums = block_sums(counts, size)
    labels = [
        f"{result.classes[b * size]}…{result.classes[min((b + 1) * size, n) - 1]}"
        for b in range(len(sums))
    ]
    with box:
        key = "overview"
        _draw(overview_chart(sums, labels, view.block), key, partial(_on_block, key))
        st.caption(f"Blocks of {size} classes, coloured by log count (diagonal included).")


def _on_block(key: str) -> None:
    block = cell_of_selection(st.session_state[key].selection)
    if block is not None:
        set_params({"block": f"{block[0]},{block[1]}"}, reset=("focus", "cell", "page", "pattern"))
