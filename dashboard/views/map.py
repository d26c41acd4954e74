"""Map: every test image as a point of its embedding's 2-D layout; a box or lasso shows them.

The layout is UMAP of the classifier head's inputs (computed once per result in the background;
PCA is shown until it is ready: the figure and the selection's gallery are a fragment that polls
the UMAP pass, swaps the figure in place and stops its own timer, with no page rerun). Up to
2,000 points are drawn (SVG); past that errors first, then a sample of the rest, over a density
of all points. A box or lasso selection is stored in the URL as its shape (``sel=box:...`` /
``sel=lasso:...``) and the gallery below shows every image whose coordinates fall in it
(sampled-out points included), paged, with the same cards as the error-analysis cell view.
The URL's ``cell`` (a confusion-matrix cell) highlights that cell's points.
"""

from __future__ import annotations

from functools import partial

import numpy as np
import streamlit as st

from core import Results, UserFacingError
from core.analysis.embedding_map import MAX_POINTS, Region
from core.analysis.gallery import page_count, page_rows
from core.analysis.slices import SliceError
from dashboard.parts import map_figure
from dashboard.parts.findings import map_pin, pin_button
from dashboard.parts.gallery import gallery_page, rows_csv
from dashboard.parts.map_figure import COLOURS
from dashboard.parts.notes import author_input
from dashboard.parts.page import error_panel, evaluation_or_stop, project_view
from dashboard.parts.sidebar import model_and_dataset
from dashboard.parts.slice_bar import slice_bar
from dashboard.state import analyses, slicing
from dashboard.state.polling import until_done
from dashboard.state.settings import settings
from dashboard.state.url import bind, set_params

PROJECT_OPEN = "map-project-open"  # session state: the folded model and dataset pickers
POLL_SECONDS = 3.0  # how often the page looks for the UMAP layout while PCA is shown


def main() -> None:
    server = settings()
    project = project_view()
    config_path, view = project.config_path, project.view
    colour = _colour()
    with st.sidebar:
        # Model and dataset are folded (built only while open, like the gallery settings): two
        # selectboxes fewer to draw make a new visitor's map 0.2 s quicker on 2 cores
        st.caption(f"**{view.model}** on **{view.dataset}**")
        box = st.expander("Model and dataset", key=PROJECT_OPEN, on_change="rerun")
        if box.open:
            with box:
                model_and_dataset(project, ("sel", "page"))
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
    result = evaluation_or_stop(config_path, view)
    slice_bar(project, result)
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
    computing = not analyses.map_layout_job(*key).future.done()
    until_done(_map, POLL_SECONDS, computing)(config_path, result)


def _colour() -> str:
    colour = st.query_params.get("mapcolor", "outcome")
    return colour if colour in COLOURS else "outcome"


def _map(config_path: str, result: Results) -> bool:
    """The figure, its caption and the selection's gallery (a fragment: while the UMAP pass
    runs, PCA is drawn and the fragment reruns; it draws UMAP when the pass is done). A box or
    lasso on the figure reruns only this. Returns whether the pass is done. The view is read
    from the URL (the selection and the page change inside this fragment)."""
    view = project_view().view
    colour = _colour()
    key = (config_path, view.model, view.dataset, result.fingerprint)
    done = analyses.map_layout_job(*key).future.done()  # before map_layout: it clears a failure
    layout, note = analyses.map_layout(*key)
    region = Region.from_param(st.query_params.get("sel"))
    n = result.num_classes
    cell = view.cell if view.cell is not None and max(view.cell) < n else None
    drawn_colour = colour
    if colour == "pattern":  # coloured by pattern once the ranking is there
        found, reason = analyses.patterns_or_reason(*key[:3], result)
        if found is None:
            drawn_colour = "outcome"
            st.caption(
                (reason or "The patterns are still being found (see the Patterns page).")
                + " Coloured right / wrong meanwhile."
            )
    figure = map_figure.figure(*key, layout.method, drawn_colour, cell, view.where)
    chart_key = f"map-{result.fingerprint[:8]}"  # the same when UMAP replaces PCA
    st.plotly_chart(
        figure,
        key=chart_key,
        on_select=partial(_on_select, chart_key),
        selection_mode=("box", "lasso"),
        config={"displaylogo": False, "scrollZoom": True},
    )
    count = len(result.index)
    shown = (
        f"all {count:,} images"
        if count <= MAX_POINTS
        else f"{MAX_POINTS:,} of {count:,} images as points (errors first) over a grey density "
        "of all"
    )
    st.caption(
        f"{layout.method.upper()} of the classifier head's inputs · {shown} · drag a box "
        "(or pick the lasso in the chart's toolbar) to see those images"
        + (f" · {note}" if note else "")
    )
    if region is None:
        # no model load from here: a selection's cards show the stored maps without it, and
        # its badges start the load (a fresh server's next visitors do not share the cores with
        # torch's import)
        st.info("Select a region of the map to see its images and their maps.")
        return done
    contained = region.contains(layout.xy)
    try:  # a selection keeps to the slice, as the figure does
        flt = slicing.slice_filter(config_path, view.model, view.dataset, result, view.where)
    except SliceError:
        flt = None
    if flt is not None:
        contained &= flt.positions
    _selection_gallery(config_path, view, result, np.flatnonzero(contained))
    return done


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
    try:  # stored maps are drawn without the model; others wait for its load
        gallery, problem, _ = gallery_page(config_path, view, result, page, heading)
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
    with right.container(horizontal=True):
        st.download_button(
            "Download the selection (CSV)",
            partial(rows_csv, rows, result.classes),
            file_name="map_selection.csv",
            mime="text/csv",
        )
        pin = partial(map_pin, result, rows)
        pin_button(pin, config_path=config_path, view=view, key="pin:map")
    if problem:
        st.warning(problem)
    st.html(gallery)


main()
