"""The selected cell of the confusion matrix: its heading, pattern strip, tag and pattern filters,
the Inspect picker, page, CSV download and the paged gallery of its images."""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import streamlit as st

from core import Results, UserFacingError, cell_rows
from core.analysis.gallery import page_count, page_rows, sort_rows
from core.data.datasets import dataset_key
from dashboard.parts.badges import cell_median, faithfulness_column
from dashboard.parts.findings import cell_pin, pin_button
from dashboard.parts.gallery import gallery_html, model_maps_at, rows_csv, stored_maps_at
from dashboard.parts.inspect_dialog import inspect_picker
from dashboard.parts.layers import layer_choice
from dashboard.parts.page import error_panel
from dashboard.parts.patterns import cell_patterns, pattern_filter, strip_cards
from dashboard.parts.verdicts import pattern_strip, stored_labels
from dashboard.state import analyses, corrections, resources
from dashboard.state.polling import DIALOG_OPEN
from dashboard.state.settings import settings
from dashboard.state.slicing import SliceFilter
from dashboard.state.url import bind
from dashboard.state.view_state import SORTS, ViewState, parse_view

if TYPE_CHECKING:
    from streamlit.delta_generator import DeltaGenerator

__all__ = ["cell_view"]


@st.fragment
def cell_view(
    config_path: str,
    models: Sequence[str],
    datasets: Sequence[str],
    result: Results,
    flt: SliceFilter | None = None,
) -> None:
    """Heading, tag filter, page, picker, download and the paged gallery of the selected cell
    (of the slice ``flt``'s images only, when given).

    A fragment: paging and the tag filter rerun only this part of the page. The view is read
    from the URL here, because a fragment rerun keeps the arguments of the last full run.
    Everything is computed before the first element is sent, so the browser receives the
    cell's elements in one burst and draws the page once, not once per slow step.
    """
    view = parse_view(st.query_params.to_dict(), models, datasets, result.num_classes)
    if "inspect-path" not in st.session_state:  # no dialog opens in this run
        st.session_state.pop(DIALOG_OPEN, None)
    if view.cell is None:
        return
    true, pred = view.cell
    names = result.classes
    column, ascending, _ = SORTS[view.sort]
    rows = sort_rows(
        cell_rows(_with_scores(config_path, view, result), true, pred), column, ascending
    )
    store = resources.notes_store(config_path, settings().read_only)
    notes_key = dataset_key(resources.project(config_path).dataset(view.dataset))
    if view.tag:
        rows = rows[rows["path"].isin(store.paths_with_tag(notes_key, view.tag))]
    if flt is not None:
        rows = rows[flt.keep(rows["index"].to_numpy())]
    of_cell, chosen, pattern_note = cell_patterns(config_path, view, result)
    if chosen is not None:
        rows = rows[rows["index"].isin(chosen.rows)]
    count = f"{len(rows):,} image" + ("" if len(rows) == 1 else "s")
    tagged = f" tagged “{view.tag}”" if view.tag else ""
    if chosen is not None:
        tagged += f" in pattern {chosen.cluster}"
    if flt is not None:
        tagged += " in the slice"
    heading = f"true {names[true]} → predicted {names[pred]}: {count}{tagged}"
    subheading = f"true *{names[true]}* → predicted *{names[pred]}*: {count}{tagged}"
    stored = stored_maps_at(result, view)
    waiting = None if stored else _waiting_for_model(config_path, view.model, subheading)
    try:  # stored results open without the model: maps to compute wait for its load
        layer, size = stored or model_maps_at(config_path, view)
    except UserFacingError as exc:
        if waiting is not None:
            waiting.empty()
        error_panel(f"Model {view.model!r} could not be loaded, so no maps can be shown", exc)
        return
    page = page_rows(rows, view.page, view.page_size)
    strip = strip_cards(config_path, view, result, of_cell, stored_labels(result, of_cell))
    gallery, problem, badges = gallery_html(
        config_path, view, result, page, layer, size, store, notes_key, heading
    )
    tags = store.all_tags(notes_key)
    # ---- nothing above this line sends anything to the browser (but the loading status)
    if waiting is not None:
        waiting.empty()
    st.subheader(subheading)
    if strip:
        st.caption(
            "Patterns in this cell: groups of its images whose predicted-class maps agree "
            "(mean maps over an example image; flagged: unlikely by chance)"
        )
        pattern_strip(config_path, view, result, of_cell, strip)  # with Test this pattern
    if pattern_note:
        st.caption(pattern_note)
    cols = st.columns([3, 4, 1.5, 2.5], vertical_alignment="bottom")
    with cols[0]:
        _tag_filter(view, tags)
        if of_cell:
            pattern_filter(of_cell, chosen)
    if rows.empty:
        st.info("No images in this cell.")
        return
    with cols[1]:
        inspect_picker(config_path, view, page, names, layer)
    pages = page_count(len(rows), view.page_size)
    if pages > 1:
        with cols[2]:
            bind(
                st.number_input,
                f"Page (of {pages})",
                "page",
                min(view.page, pages),
                min_value=1,
                max_value=pages,
                step=1,
            )
    with cols[3].container(horizontal=True, vertical_alignment="bottom"):
        st.download_button(
            "Download rows (CSV)",
            partial(rows_csv, rows, names),  # made when clicked, not on every rerun
            file_name=f"cell_{names[true]}_{names[pred]}.csv".replace(" ", "_"),
            mime="text/csv",
            help="Every image of this cell (all pages) with its probabilities and loss",
        )
        pin = partial(cell_pin, view, result, rows, chosen.cluster if chosen else None, flt)
        pin_button(pin, config_path=config_path, view=view, key="pin:cell")
    if problem:
        st.warning(problem)
    st.html(gallery)
    badges.show()  # after the cards: scored in the background, filled in when ready
    if pages > 1:
        cell_median(config_path, view, result, rows, layer)


def _waiting_for_model(config_path: str, model: str, subheading: str) -> DeltaGenerator | None:
    """None when the model is loaded; else a placeholder showing the cell's heading and a status
    that says the maps wait for the model (a cell clicked just after a fresh server's first
    page), to be emptied when the cards are ready."""
    if resources.model_ready(config_path, model):
        return None
    waiting = st.empty()
    with waiting.container():
        st.subheader(subheading)
        st.info("Loading the model for maps…", icon=":material/hourglass_top:")
    return waiting


def _with_scores(config_path: str, view: ViewState, result: Results) -> pd.DataFrame:
    """The predictions, plus the label-quality or map-faithfulness score when the gallery is
    sorted by it; with the corrected labels when the URL asks for them."""
    table = corrections.predictions(config_path, view.dataset, result)
    if SORTS[view.sort][0] == "faithfulness":
        try:
            layer = layer_choice(config_path, view)[1]
        except UserFacingError:
            return table.assign(faithfulness=np.nan)
        scores = faithfulness_column(config_path, view, result, layer)
        return table.assign(faithfulness=scores)
    if SORTS[view.sort][0] != "label_quality":
        return table
    flags = analyses.quality(config_path, view.model, view.dataset, result.fingerprint)
    return table.assign(label_quality=flags.self_confidence)


def _tag_filter(view: ViewState, tags: list[str]) -> None:
    options = ["", *tags] if view.tag in tags or not view.tag else ["", view.tag, *tags]
    bind(
        st.selectbox,
        "Only images tagged",
        "tag",
        view.tag,
        options,
        ("page",),
        format_func=lambda t: t or "(any image)",
    )
