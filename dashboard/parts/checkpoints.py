"""The N-checkpoint view of the Compare page: the heatmap of groups × candidates, coloured by
the change in accuracy from the baseline, with the significant cells marked (▼ regression,
▲ improvement); a click on a cell opens its newly broken (or fixed) images; accuracy across the
checkpoints in config order.

Plotly heatmaps report no click to Streamlit (streamlit#8760, #15042: a heatmap trace has no
point selection), so the heatmap only paints: an invisible scatter point at the centre of
every cell carries the hover text and the click (the layout's ``hoverdistance=-1`` makes the
nearest centre, i.e. the cell under the pointer, answer anywhere in the cell), and a second
scatter draws the marks. Every trace is built from whole arrays: 1,000 classes × 5 candidates
is three traces, not 5,000 shapes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import streamlit as st

from dashboard.parts.clickable_chart import clickable_chart
from dashboard.state.url import set_params

if TYPE_CHECKING:  # Plotly loads when the view is drawn
    import plotly.graph_objects as go

    from core.analysis.checkpoints import Checkpoints
    from core.analysis.regression import Gate

__all__ = [
    "HEATMAP_KEY",
    "LABELLED_ROWS",
    "accuracy_figure",
    "agree_of",
    "group_label",
    "group_param",
    "group_summary",
    "heatmap_figure",
    "parse_group",
    "show_accuracy",
    "show_heatmap",
    "significant_table",
]

HEATMAP_KEY = "checkpoint-heatmap"
MARKS = {"regression": ("triangle-down", "▼"), "improvement": ("triangle-up", "▲")}
# hover/click payload of each cell, in this order (customdata of the invisible grid trace)
PAYLOAD = ("model", "group", "name", "agree", "n", "base", "cand", "change", "broken", "fixed",
           "p", "p_raw", "verdict")  # fmt: skip
HOVER = (
    "<b>%{customdata[0]}</b> vs baseline<br>%{customdata[1]}: <b>%{customdata[2]}</b>, "
    "%{customdata[4]:,} images<br>accuracy %{customdata[5]:.1%} → %{customdata[6]:.1%} "
    "(%{customdata[7]:+.2f} points)<br>newly broken %{customdata[8]:,}, fixed "
    "%{customdata[9]:,}<br>p = %{customdata[10]:.3g} (Holm; McNemar %{customdata[11]:.3g})"
    "<br>%{customdata[12]}<extra></extra>"
)
LINE_CLASSES = 10  # per-class lines drawn in the accuracy chart (those that vary most)
LABELLED_ROWS = 60  # up to this many groups, each row is labelled


def parse_group(param: str | None) -> tuple[str, str]:
    """A ``group`` URL parameter (``class:<name>``, ``slice:<name>``, ``overall`` or absent) as
    (kind, name); ("", text) for anything else."""
    if not param or param == "overall":
        return "overall", "overall"
    kind, sep, name = param.partition(":")
    return (kind, name) if sep and kind in ("class", "slice") and name else ("", param)


def group_param(kind: str, name: str) -> str | None:
    """The ``group`` URL parameter of a group (None for overall, as ``check`` writes links)."""
    return None if kind == "overall" else f"{kind}:{name}"


def group_label(kind: str, name: str) -> str:
    return "all images" if kind == "overall" else f"{kind} {name}"


def agree_of(change: np.ndarray, broken: np.ndarray, fixed: np.ndarray) -> np.ndarray:
    """The images a click on each cell opens ("broken" or "fixed", elementwise): the newly
    broken ones where accuracy dropped (or, unchanged, where any broke), else the fixed ones."""
    dropped = (change < 0) | ((change == 0) & (broken > 0)) | ((broken == 0) & (fixed == 0))
    return np.where(dropped, "broken", "fixed")


def _labels(result: Checkpoints) -> list[str]:
    groups = result.groups
    return [
        "overall" if k == "overall" else (n if k == "class" else f"{k}: {n}")
        for k, n in zip(groups["group"], groups["name"], strict=True)
    ]


def heatmap_figure(result: Checkpoints, selected: tuple[int, int] | None = None) -> go.Figure:
    """Groups (rows, overall on top) × candidates (columns), coloured by the change in accuracy
    from the baseline in points (diverging, 0 white); ▼/▲ on the regressions/improvements;
    ``selected`` (row, column) outlined."""
    import plotly.graph_objects as go

    values = result.values
    rows, cols = values["change"].shape
    change = values["change"] * 100  # points
    span = max(1.0, float(np.nanmax(np.abs(change))) if change.size else 1.0)
    xs, ys = np.tile(np.arange(cols), rows), np.repeat(np.arange(rows), cols)
    row_px = int(np.clip(700 / max(rows, 1), 1, 34))
    figure = go.Figure(
        [
            go.Heatmap(
                z=change,
                x=np.arange(cols),
                y=np.arange(rows),
                colorscale="RdBu",
                zmid=0,
                zmin=-span,
                zmax=span,
                colorbar={"title": {"text": "accuracy change<br>(points)"}},
                hoverinfo="skip",
                xgap=1 if cols < 40 else 0,
                ygap=1 if rows < 80 else 0,
            ),
            _marks(values["verdict"], row_px),
            go.Scatter(
                x=xs,
                y=ys,
                mode="markers",
                marker={"size": 4, "opacity": 0, "color": "black"},
                selected={"marker": {"opacity": 0}},
                unselected={"marker": {"opacity": 0}},
                customdata=_payload(result, xs, ys),
                hovertemplate=HOVER,
                showlegend=False,
                name="cells",
            ),
        ]
    )
    labels = _labels(result)
    figure.update_layout(
        height=int(np.clip(110 + row_px * rows, 260, 900)),
        margin={"l": 10, "r": 10, "t": 40, "b": 10},
        hovermode="closest",
        hoverdistance=-1,
        xaxis={
            "tickvals": list(range(cols)),
            "ticktext": list(result.candidates),
            "side": "top",
            "range": [-0.5, cols - 0.5],
            "showgrid": False,
            "zeroline": False,
        },
        yaxis={
            "tickvals": list(range(rows)) if rows <= LABELLED_ROWS else None,
            "ticktext": labels if rows <= LABELLED_ROWS else None,
            "showticklabels": rows <= LABELLED_ROWS,  # past that, the hover names the group
            "range": [rows - 0.5, -0.5],  # overall on top
            "showgrid": False,
            "zeroline": False,
        },
        plot_bgcolor="#f0f0f0",
    )
    if selected is not None:
        r, c = selected
        figure.add_shape(
            type="rect", x0=c - 0.5, x1=c + 0.5, y0=r - 0.5, y1=r + 0.5,
            line={"color": "black", "width": 3}, layer="above",
        )  # fmt: skip
    return figure


def _payload(result: Checkpoints, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Each cell's :data:`PAYLOAD` (row-major, as ``xs`` and ``ys``), built column by column."""
    flat = {k: v.reshape(-1) for k, v in result.values.items()}
    models = np.asarray(result.candidates, dtype=object)
    kinds = result.groups["group"].to_numpy(dtype=object)
    names = result.groups["name"].to_numpy(dtype=object)
    payload = np.empty((len(xs), len(PAYLOAD)), dtype=object)
    payload[:, 0] = models[xs] if len(models) else []
    payload[:, 1], payload[:, 2] = kinds[ys], names[ys]
    payload[:, 3] = agree_of(flat["change"], flat["broken"], flat["fixed"])
    for i, key in enumerate(("n", "baseline", "candidate"), start=4):
        payload[:, i] = flat[key]
    payload[:, 7] = flat["change"] * 100
    for i, key in enumerate(("broken", "fixed", "p", "p_raw", "verdict"), start=8):
        payload[:, i] = flat[key]
    payload[pd.isna(payload)] = None  # a group a candidate lacks: null, not NaN, in the JSON
    return payload


def _marks(verdict: np.ndarray, row_px: int) -> go.Scatter:
    """▼ on each regression, ▲ on each improvement (only those cells: a small trace)."""
    import plotly.graph_objects as go

    ys, xs = np.nonzero(verdict != "")
    symbols = [MARKS[v][0] for v in verdict[ys, xs]]
    return go.Scatter(
        x=xs,
        y=ys,
        mode="markers",
        marker={
            "symbol": symbols,
            "size": int(np.clip(row_px * 0.55, 5, 16)),
            "color": "black",
            "line": {"color": "white", "width": 1},
        },
        unselected={"marker": {"opacity": 1}},
        hoverinfo="skip",
        showlegend=False,
        name="significant",
    )


def show_heatmap(result: Checkpoints, selected: tuple[int, int] | None) -> None:
    """Draw the heatmap; a click on a cell puts its candidate, group and images in the URL."""
    clickable_chart(heatmap_figure(result, selected), HEATMAP_KEY, _on_cell)


def _on_cell(data: Any) -> bool:
    if not (isinstance(data, list) and len(data) == len(PAYLOAD)):
        return False
    model, kind, name, agree = (str(v) for v in data[:4])
    values = {"model_b": model, "agree": agree}
    group = group_param(kind, name)
    if group is not None:
        values["group"] = group
    set_params(values, reset=("group", "page", "csort"))
    return True


def group_summary(gate: Gate, kind: str, name: str) -> str:
    """One line on a group: images, both accuracies, broken and fixed, p, the verdict."""
    table = gate.table
    row = table[(table["group"] == kind) & (table["name"] == name)]
    if row.empty:
        return f"No compared image belongs to {group_label(kind, name)}."
    r = row.iloc[0]
    verdict = {"regression": " — **regression**", "improvement": " — **improvement**"}.get(
        r["verdict"], ""
    )
    family = int(((table["group"] == "slice") == (kind == "slice")).sum())  # Holm's family
    return (
        f"{group_label(kind, name).capitalize()}: {int(r['n']):,} images, accuracy "
        f"{r['baseline']:.1%} → {r['candidate']:.1%} ({r['change'] * 100:+.2f} points); "
        f"{int(r['broken']):,} newly broken, {int(r['fixed']):,} fixed; p = {r['p']:.3g} "
        f"(Holm over {family:,} groups; McNemar {r['p_raw']:.3g}){verdict}"
    )


def accuracy_figure(result: Checkpoints, order: Sequence[str], baseline: str) -> go.Figure:
    """Overall and per-class accuracy across the checkpoints in ``order`` (config order): all
    classes up to :data:`LINE_CLASSES`, else the ones whose accuracy varies most."""
    import plotly.graph_objects as go

    table = result.accuracy(order)
    models = [m for m in order if m in table.columns]
    acc = table[models].to_numpy(np.float64)
    classes = np.flatnonzero((table["group"] == "class").to_numpy())
    if len(classes) > LINE_CLASSES:
        spread = np.nanmax(acc[classes], axis=1) - np.nanmin(acc[classes], axis=1)
        classes = classes[np.argsort(-spread, kind="stable")[:LINE_CLASSES]]
    ticks = [f"{m} (baseline)" if m == baseline else m for m in models]
    figure = go.Figure()
    for i in classes:
        figure.add_trace(
            go.Scatter(
                x=ticks, y=acc[i], mode="lines+markers", name=str(table["name"].iloc[i]),
                line={"width": 1.5}, marker={"size": 6},
                hovertemplate="%{x}<br>" + str(table["name"].iloc[i]) + ": %{y:.1%}<extra></extra>",
            )
        )  # fmt: skip
    overall = np.flatnonzero((table["group"] == "overall").to_numpy())
    for i in overall:
        figure.add_trace(
            go.Scatter(
                x=ticks, y=acc[i], mode="lines+markers", name="overall",
                line={"width": 4, "color": "black"}, marker={"size": 9},
                hovertemplate="%{x}<br>overall: %{y:.1%}<extra></extra>",
            )
        )  # fmt: skip
    figure.update_layout(
        height=380,
        margin={"l": 10, "r": 10, "t": 30, "b": 10},
        yaxis={"title": {"text": "accuracy (recall, per class)"}, "tickformat": ".0%"},
        xaxis={"type": "category"},
        legend={"title": {"text": "group"}},
    )
    return figure


def show_accuracy(result: Checkpoints, order: Sequence[str], baseline: str) -> None:
    classes = int((result.groups["group"] == "class").sum())
    st.subheader("Accuracy across the checkpoints")
    st.plotly_chart(accuracy_figure(result, order, baseline), key="checkpoint-accuracy")
    shown = (
        f"all {classes} classes"
        if classes <= LINE_CLASSES
        else f"the {LINE_CLASSES} classes (of {classes:,}) whose accuracy varies most"
    )
    st.caption(
        f"In the order of the config's `[[models]]`: overall (black) and {shown}, on the "
        "images every checkpoint was evaluated on."
    )


def significant_table(result: Checkpoints) -> pd.DataFrame:
    """The regressions and improvements of every candidate, most significant first."""
    from core.analysis.regression import changes_table

    table = changes_table(result.gates)
    found = table[table["verdict"] != ""]
    return found.sort_values(["verdict", "p", "p_raw"], kind="stable").reset_index(drop=True)
