"""Error analysis, folded: reliability diagram with ECE, confidence histograms of right vs wrong,
per-class precision and recall sorted; a click on a bin or bar lists its images below.

The numbers come from :mod:`core.analysis.calibration` and the per-class metrics; this module
only draws them with Plotly (imported when the section is opened) and keeps the clicked bar in
the URL (``chart=rel:3``, ``chart=wrong:18``, ``chart=recall:7``, ``chart=precision:7``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import streamlit as st

from core.analysis.calibration import confidence_histogram, in_bin, reliability
from core.analysis.gallery import page_count, page_rows
from core.errors import UserFacingError
from core.results import Results
from dashboard.parts.clickable_chart import clickable_chart
from dashboard.parts.gallery import gallery_page
from dashboard.parts.page import error_panel
from dashboard.state import resources
from dashboard.state.url import bind, set_params
from dashboard.state.view_state import ViewState, parse_view

__all__ = ["HISTOGRAM_BINS", "RELIABILITY_BINS", "calibration_section", "chart_rows"]

RELIABILITY_BINS = 10
HISTOGRAM_BINS = 20
CLASS_BARS = 30  # classes shown in the per-class chart (lowest recall first)
KINDS = ("rel", "right", "wrong", "recall", "precision")


@st.fragment
def calibration_section(
    config_path: str, models: Sequence[str], datasets: Sequence[str], result: Results
) -> None:
    """The folded charts and, when a bar was clicked, its images (a fragment: clicks rerun only
    this part)."""
    box = st.expander(
        "Calibration and per-class precision/recall", key="calibration-open", on_change="rerun"
    )
    if not box.open:
        return
    view = parse_view(st.query_params.to_dict(), models, datasets, result.num_classes)
    table = result.predictions
    if table.empty:
        box.info("No image could be evaluated.")
        return
    confidence = table["confidence"].to_numpy()
    correct = (table["true"] == table["pred"]).to_numpy()
    with box:
        left, right = st.columns(2)
        with left:
            _draw(_reliability_figure(confidence, correct), "chart-reliability")
        with right:
            _draw(_histogram_figure(confidence, correct), "chart-histogram")
        metrics = resources.class_metrics(config_path, view.model, view.dataset)
        _draw(_class_figure(metrics), "chart-classes")
        st.caption("Click a bin or a bar to see its images.")
        picked = st.query_params.get("chart")
        if picked:
            _chart_gallery(config_path, view, result, picked)


def _draw(figure, key: str) -> None:  # type: ignore[no-untyped-def]
    clickable_chart(figure, key, _on_bar)


def _on_bar(data: Any) -> bool:
    if isinstance(data, list) and len(data) == 2:
        set_params({"chart": f"{data[0]}:{int(data[1])}"}, reset=("bpage",))
        return True
    return False


def chart_rows(result: Results, picked: str) -> tuple[pd.DataFrame, str] | None:
    """The images of a clicked bar (``kind:index``), wrong first then most confident first, and
    a heading; None for anything malformed."""
    kind, _, number = picked.partition(":")
    if kind not in KINDS or not number.isdigit():
        return None
    index = int(number)
    table = result.predictions
    confidence = table["confidence"].to_numpy()
    correct = (table["true"] == table["pred"]).to_numpy()
    names = result.classes
    if kind in ("rel", "right", "wrong"):
        bins = RELIABILITY_BINS if kind == "rel" else HISTOGRAM_BINS
        if index >= bins:
            return None
        mask = in_bin(confidence, index, bins)
        what = "" if kind == "rel" else f"{kind} "
        if kind != "rel":
            mask &= correct if kind == "right" else ~correct
        lo, hi = index / bins, (index + 1) / bins
        heading = f"{int(mask.sum()):,} {what}predictions with confidence {lo:.0%}–{hi:.0%}"
    else:
        if index >= len(names):
            return None
        column = "true" if kind == "recall" else "pred"
        mask = (table[column] == index).to_numpy()
        side = "true class" if kind == "recall" else "predicted as"
        heading = f"{int(mask.sum()):,} images {side} {names[index]} ({kind})"
    rows = table[mask]
    order = np.lexsort((-rows["confidence"].to_numpy(), correct[mask]))
    return rows.iloc[order], heading


def _chart_gallery(config_path: str, view: ViewState, result: Results, picked: str) -> None:
    found = chart_rows(result, picked)
    if found is None:
        return
    rows, heading = found
    st.subheader(heading)
    if rows.empty:
        st.info("No images in this bar.")
        return
    try:
        bpage = max(1, int(st.query_params.get("bpage", "1")))
    except ValueError:
        bpage = 1
    pages = page_count(len(rows), view.page_size)
    page = page_rows(rows, min(bpage, pages), view.page_size)
    try:  # stored maps are drawn without the model; others wait for its load
        gallery, problem, _ = gallery_page(config_path, view, result, page, heading)
    except UserFacingError as exc:
        error_panel(f"Model {view.model!r} could not be loaded, so no maps can be shown", exc)
        return
    if pages > 1:
        bind(
            st.number_input, f"Page (of {pages})", "bpage", min(bpage, pages),
            min_value=1, max_value=pages, step=1,
        )  # fmt: skip
    if problem:
        st.warning(problem)
    st.html(gallery.replace('class="cam-gallery"', 'class="cam-gallery cam-chart"', 1))


def _reliability_figure(confidence: np.ndarray, correct: np.ndarray):  # type: ignore[no-untyped-def]
    import plotly.graph_objects as go

    rel = reliability(confidence, correct, RELIABILITY_BINS)
    t = rel.table
    centre = (t["lo"] + t["hi"]) / 2
    fig = go.Figure()
    fig.add_trace(
        go.Bar(
            x=centre, y=t["accuracy"].fillna(0), width=1 / RELIABILITY_BINS * 0.95,
            name="accuracy", marker_color="#1f77b4",
            customdata=np.stack([np.full(len(t), "rel", object), t["bin"]], 1),
            hovertemplate="confidence %{x:.2f}<br>accuracy %{y:.1%}<br>%{text} images"
            "<extra></extra>",
            text=t["count"], textposition="none",
        )
    )  # fmt: skip
    fig.add_trace(
        go.Scatter(
            x=[0, 1], y=[0, 1], mode="lines", name="perfectly calibrated",
            line={"dash": "dot", "color": "#888"}, hoverinfo="skip",
        )
    )  # fmt: skip
    fig.update_layout(
        title=f"Reliability diagram · ECE {rel.ece:.2%}",
        xaxis={"title": "confidence", "range": [0, 1]},
        yaxis={"title": "accuracy", "range": [0, 1]},
        **_LAYOUT,
    )
    return fig


def _histogram_figure(confidence: np.ndarray, correct: np.ndarray):  # type: ignore[no-untyped-def]
    import plotly.graph_objects as go

    hist = confidence_histogram(confidence, correct, HISTOGRAM_BINS)
    centre = (hist["lo"] + hist["hi"]) / 2
    fig = go.Figure()
    for name, color in (("right", "#9aa5b1"), ("wrong", "#d62728")):
        fig.add_trace(
            go.Bar(
                x=centre, y=hist[name], name=name, marker_color=color,
                customdata=np.stack([np.full(len(hist), name, object), hist["bin"]], 1),
                hovertemplate=f"{name}: %{{y:,}} at confidence %{{x:.2f}}<extra></extra>",
            )
        )  # fmt: skip
    fig.update_layout(
        title="Confidence of right and wrong predictions",
        barmode="group",
        xaxis={"title": "confidence", "range": [0, 1]},
        yaxis={"title": "images"},
        **_LAYOUT,
    )
    return fig


def _class_figure(metrics: pd.DataFrame):  # type: ignore[no-untyped-def]
    import plotly.graph_objects as go

    table = metrics.reset_index(drop=True).assign(code=np.arange(len(metrics)))
    shown = table.sort_values(["recall", "precision", "class"]).head(CLASS_BARS)
    fig = go.Figure()
    for name, color in (("recall", "#1f77b4"), ("precision", "#ff7f0e")):
        fig.add_trace(
            go.Bar(
                x=shown["class"].astype(str), y=shown[name], name=name, marker_color=color,
                customdata=np.stack([np.full(len(shown), name, object), shown["code"]], 1),
                hovertemplate=f"%{{x}}: {name} %{{y:.1%}}<extra></extra>",
            )
        )  # fmt: skip
    more = f" (the {CLASS_BARS} lowest of {len(table):,})" if len(table) > CLASS_BARS else ""
    fig.update_layout(
        title=f"Per-class recall and precision, lowest recall first{more}",
        barmode="group",
        xaxis={"type": "category", "title": None},
        yaxis={"range": [0, 1]},
        **_LAYOUT,
    )
    return fig


_LAYOUT = {
    "height": 360,
    "margin": {"l": 10, "r": 10, "t": 40, "b": 10},
    "legend": {"orientation": "h", "y": -0.2},
    "clickmode": "event+select",
}
