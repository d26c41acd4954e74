"""Map: every test image as a point of its embedding's 2-D layout; a box or lasso shows them.

The layout is UMAP of the classifier head's inputs (computed once per result in the background;
PCA is shown until it is ready). Up to 100,000 points are drawn with WebGL; past that every
error and a sample of the rest, over a density of all points. A box or lasso selection is
stored in the URL as its shape (``sel=box:...`` / ``sel=lasso:...``) and the gallery below shows
every image whose coordinates fall in it (sampled-out points included), paged, with the same
cards as the error-analysis cell view. The URL's ``cell`` (a confusion-matrix cell) highlights
that cell's points.
"""

from __future__ import annotations

from functools import partial

import numpy as np
import pandas as pd
import streamlit as st

from core import UserFacingError
from core.analysis.embedding_map import MAX_POINTS, Region
from core.analysis.gallery import page_count, page_rows
from core.data.datasets import dataset_key
from dashboard import map_data, resources
from dashboard.notes_ui import author_input
from dashboard.settings import settings
from dashboard.url import bind, set_params
from dashboard.widgets import _gallery_html, error_panel, project_view

COLOURS = {
    "outcome": "right / wrong",
    "true": "true class",
    "pred": "predicted class",
    "label": "suspected label error",
}
_RIGHT, _WRONG = "#9aa5b1", "#d62728"
_PALETTE = (
    *("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2"),
    *("#7f7f7f", "#bcbd22", "#17becf", "#393b79", "#637939", "#8c6d31", "#843c39"),
    *("#7b4173", "#3182bd", "#e6550d", "#31a354", "#756bb1", "#636363"),
)
_RING = {"size": 11, "color": "rgba(0,0,0,0)", "line": {"width": 2, "color": "#000"}}


def main() -> None:
    server = settings()
    project = project_view()
    config_path, view = project.config_path, project.view
    params = st.query_params
    with st.sidebar:
        bind(st.selectbox, "Model", "model", view.model, project.models, reset=("sel", "page"))
        bind(st.selectbox, "Dataset", "dataset", view.dataset, project.datasets, ("sel", "page"))
        colour = params.get("mapcolor", "outcome")
        colour = colour if colour in COLOURS else "outcome"
        bind(
            st.selectbox,
            "Colour by",
            "mapcolor",
            colour,
            list(COLOURS),
            format_func=COLOURS.get,
        )
    author_input(server)
    st.title("Map of the test set")
    try:
        with st.spinner("Evaluating…"):
            result = resources.evaluation(config_path, view.model, view.dataset)
    except UserFacingError as exc:
        error_panel(f"Cannot evaluate {view.model!r} on {view.dataset!r}", exc)
        st.stop()
    if not result.has_embeddings:
        st.info(
            "These results hold no embeddings (evaluated with `embeddings = false`, "
            "`--no-embeddings`, by an older version, or the model has no Linear head). "
            "Evaluate again with embeddings on to see the map."
        )
        st.stop()
    if not len(result.index):
        st.info("No image could be evaluated, so there is nothing to map.")
        st.stop()
    key = (config_path, view.model, view.dataset, result.fingerprint)
    layout, note = map_data.layout(*key)
    region = Region.from_param(params.get("sel"))
    n = result.num_classes
    cell = view.cell if view.cell is not None and max(view.cell) < n else None
    figure = _figure(key, result, layout.xy, layout.method, colour, region, cell)
    chart_key = f"map-{result.fingerprint[:8]}-{layout.method}"
    st.plotly_chart(
        figure,
        key=chart_key,
        on_select=partial(_on_select, chart_key),
        selection_mode=("box", "lasso"),
        config={"displaylogo": False, "scrollZoom": True},
    )
    count = len(result.index)
    shown = (
        f"all {count:,} images" if count <= MAX_POINTS else f"{MAX_POINTS:,} of {count:,} images"
    )
    st.caption(
        f"{layout.method.upper()} of the classifier head's inputs · {shown} "
        "(past 100,000: every error, a sample of the rest, and a density of all) · drag a box "
        "(or pick the lasso in the chart's toolbar) to see those images"
        + (f" · {note}" if note else "")
    )
    if note:
        _redraw_when_ready(*key)
    if region is None:
        st.info("Select a region of the map to see its images and their maps.")
        return
    inside = np.flatnonzero(region.contains(layout.xy))
    _selection_gallery(config_path, view, result, inside)


def _figure(key, result, xy, method, colour, region, cell):  # type: ignore[no-untyped-def]
    import plotly.graph_objects as go

    drawn = map_data.drawn(*key, method, MAX_POINTS)
    rows = drawn.rows
    true, pred = result.true[rows], result.pred[rows]
    names = np.asarray(result.classes, dtype=object)
    paths = result.manifest.column("path").take(result.index[rows]).to_numpy(zero_copy_only=False)
    hover = "%{customdata[1]}<br>true %{customdata[2]} · predicted %{customdata[3]}<extra></extra>"
    custom = np.stack([rows, paths, names[true], names[pred]], axis=1)
    fig = go.Figure()
    if drawn.grid is not None:
        counts, xs, ys = drawn.grid
        fig.add_trace(
            go.Heatmap(
                z=np.log1p(counts), x=xs, y=ys, colorscale="Greys", showscale=False,
                hoverinfo="skip", opacity=0.5, name="density",
            )
        )  # fmt: skip
    groups = _groups(key, result, rows, true, pred, colour)
    for label, mask, color in groups:
        if not mask.any():
            continue
        fig.add_trace(
            go.Scattergl(
                x=xy[rows[mask], 0],
                y=xy[rows[mask], 1],
                mode="markers",
                name=label,
                marker={"size": 5, "color": color, "opacity": 0.8},
                customdata=custom[mask],
                hovertemplate=hover,
            )
        )
    if cell is not None:
        mask = (true == cell[0]) & (pred == cell[1])
        fig.add_trace(
            go.Scattergl(
                x=xy[rows[mask], 0], y=xy[rows[mask], 1], mode="markers",
                name=f"cell {names[cell[0]]} → {names[cell[1]]}", customdata=custom[mask],
                hovertemplate=hover,
                marker=_RING,
            )
        )  # fmt: skip
    if region is not None:
        fig.add_shape(_shape(region), line={"color": "#444", "dash": "dot"}, editable=False)
    fig.update_layout(
        height=620,
        margin={"l": 10, "r": 10, "t": 10, "b": 10},
        dragmode="select",
        uirevision=key[3],
        legend={"itemsizing": "constant", "orientation": "h", "y": -0.02, "yanchor": "top"},
        xaxis={"showticklabels": False, "title": None},
        yaxis={"showticklabels": False, "title": None},
        plot_bgcolor="white",
    )
    return fig


def _groups(key, result, rows, true, pred, colour):  # type: ignore[no-untyped-def]
    """(legend label, mask over the drawn points, colour) per trace."""
    if colour == "outcome":
        return [("right", true == pred, _RIGHT), ("wrong", true != pred, _WRONG)]
    if colour == "label":
        from dashboard import analyses

        flags = analyses.quality(*key).is_issue[rows]
        return [("label looks right", ~flags, _RIGHT), ("suspected label error", flags, _WRONG)]
    values = true if colour == "true" else pred
    k = result.num_classes
    if k <= len(_PALETTE):
        return [(result.classes[c], values == c, _PALETTE[c]) for c in range(k)]
    # many classes: one trace, classes spread over a colour scale (the hover names them)
    return [(COLOURS[colour], np.ones(len(rows), bool), values.astype(float))]


def _shape(region: Region) -> dict:  # type: ignore[type-arg]
    if region.kind == "box":
        (x0, y0), (x1, y1) = region.points
        return {"type": "rect", "x0": x0, "y0": y0, "x1": x1, "y1": y1}
    path = "M" + "L".join(f"{x},{y}" for x, y in region.points) + "Z"
    return {"type": "path", "path": path}


def _on_select(key: str) -> None:
    selection = st.session_state[key].selection
    region = region_of_selection(selection)
    if region is None:
        set_params({}, reset=("sel", "page"))
    else:
        set_params({"sel": region.to_param()}, reset=("page",))


def region_of_selection(selection) -> Region | None:  # type: ignore[no-untyped-def]
    """The last box or lasso of a Plotly selection event, or None (cleared)."""
    for item in reversed(list(selection.get("lasso") or [])):
        xs, ys = item.get("x") or [], item.get("y") or []
        if len(xs) >= 3 and len(xs) == len(ys):
            return Region("lasso", tuple(zip(map(float, xs), map(float, ys), strict=True)))
    for item in reversed(list(selection.get("box") or [])):
        xs, ys = item.get("x") or [], item.get("y") or []
        if len(xs) == 2 and len(ys) == 2:
            return Region("box", ((float(xs[0]), float(ys[0])), (float(xs[1]), float(ys[1]))))
    return None


@st.fragment(run_every=3.0)
def _redraw_when_ready(config_path: str, model: str, dataset: str, fingerprint: str) -> None:
    """Every 3 s until the UMAP layout is done, then the page again with it."""
    if map_data.layout_job(config_path, model, dataset, fingerprint).future.done():
        st.rerun(scope="app")


def _selection_gallery(config_path, view, result, inside: np.ndarray) -> None:  # type: ignore[no-untyped-def]
    """The selected images, errors first then by confidence, paged, with both maps."""
    table = result.predictions
    rows = table.iloc[inside]
    order = np.lexsort((-rows["confidence"].to_numpy(), rows["true"] == rows["pred"]))
    rows = rows.iloc[order]
    wrong = int((rows["true"] != rows["pred"]).sum())
    heading = f"{len(rows):,} images in the selection ({wrong:,} wrong)"
    if rows.empty:
        st.subheader(heading)
        st.info("No image lies in the selected region.")
        return
    pages = page_count(len(rows), view.page_size)
    page = page_rows(rows, min(view.page, pages), view.page_size)
    store = resources.notes_store(config_path, settings().read_only)
    notes_key = dataset_key(resources.project(config_path).dataset(view.dataset))
    try:  # stored results open without the model: the gallery loads it
        _, layer = resources.layers(config_path, view.model)
        gallery, problem = _gallery_html(
            config_path, view, result, page, layer, store, notes_key, heading
        )
    except UserFacingError as exc:
        error_panel(f"Model {view.model!r} could not be loaded, so no maps can be shown", exc)
        return
    st.subheader(heading)
    left, right = st.columns([1, 3], vertical_alignment="bottom")
    if pages > 1:
        with left:
            bind(
                st.number_input, f"Page (of {pages})", "page", min(view.page, pages),
                min_value=1, max_value=pages, step=1,
            )  # fmt: skip
    with right:
        st.download_button(
            "Download the selection (CSV)",
            partial(_csv, rows, result.classes),
            file_name="map_selection.csv",
            mime="text/csv",
        )
    if problem:
        st.warning(problem)
    st.html(gallery)


def _csv(rows: pd.DataFrame, names: tuple[str, ...]) -> bytes:
    out = rows.assign(true=[names[i] for i in rows["true"]], pred=[names[i] for i in rows["pred"]])
    return out.to_csv(index=False).encode()


main()
