"""Error analysis: the clickable confusion matrix and the selected cell's images with CAMs."""

from __future__ import annotations

import time
from functools import partial

import streamlit as st

from core import (
    ClassCountMismatchError,
    DatasetError,
    ModelLoadError,
    Results,
    UserFacingError,
)
from core.analysis.metrics import top_confused_pairs
from core.results import StoreWriteError
from dashboard.parts.calibration import calibration_section
from dashboard.parts.cell import cell_view
from dashboard.parts.corrected import labels_banner, labels_toggle
from dashboard.parts.matrix import EXPLORER, matrix_section, matrix_settings
from dashboard.parts.notes import author_input
from dashboard.parts.page import error_panel, folded, project_view
from dashboard.parts.sidebar import gallery_settings, model_and_dataset, sidebar_summary
from dashboard.parts.slice_bar import slice_bar
from dashboard.state import analyses, corrections, resources
from dashboard.state.settings import settings
from dashboard.state.slicing import SliceFilter
from dashboard.state.url import set_params
from dashboard.state.view_state import ViewState, parse_view


def main() -> None:
    server = settings()
    project = project_view()
    config, config_path, view = project.config, project.config_path, project.view
    models, datasets = project.models, project.datasets
    if st.query_params.get("dataset", view.dataset) != view.dataset:  # not one for this model
        set_params({"dataset": view.dataset}, reset=("cell", "page", "pattern"))
    with st.sidebar:
        st.header("Project")
        st.caption(f"config: `{config.path.name}`")
        model_and_dataset(project, ("cell", "page", "pattern"), model_reset=("layer",))
        labels_toggle()
    # Stored results are drawn without the model: it loads on a thread meanwhile, so a cell
    # clicked as soon as the matrix shows waits for what is left of the load, not all of it.
    resources.model_loading(config_path, view.model)
    try:
        result = _evaluation(config_path, view)
    except UserFacingError as exc:
        author_input(server)
        error_panel(_failure_title(exc, view), exc)
        st.stop()
    st.title("Where is the model wrong, and where did it look?")
    description = config.model(view.model).description
    if description:
        st.info(description, icon=":material/lightbulb:")
    flt = slice_bar(project, result)
    fixed = corrections.active(config_path, view.dataset, result)
    labels_banner(result, fixed)
    tables = st.container()
    # The matrix goes out before the tables and the sidebar's settings (their places on the page
    # do not depend on the order): a new visitor's browser starts loading the chart's
    # JavaScript, the largest part of a first page, while it draws the rest.
    explorer(config_path, models, datasets, result, flt)
    calibration_section(config_path, models, datasets, result)
    with tables:
        _tables(config_path, view)
    sidebar_summary(result, flt, fixed.predictions if fixed is not None else None)
    matrix_settings(view, result.num_classes)
    # Drawn whether or not the model has loaded (its layer list follows at the next rerun), so
    # the page never reruns by itself when the load ends: a rerun could swallow a click.
    try:
        gallery_settings(config_path, view, result)
    except UserFacingError as exc:
        error_panel(f"{_failure_title(exc, view)}; its stored results are shown", exc)
    resources.warm_up(config_path, view.model, view.dataset, result.fingerprint)
    # a cell's patterns strip needs the ranking: found while the visitor reads the matrix
    analyses.start_patterns(config_path, view.model, view.dataset, result)
    author_input(server)


@st.fragment(key=EXPLORER)  # a click on the matrix reruns it
def explorer(
    config_path: str,
    models: list[str],
    datasets: list[str],
    result: Results,
    flt: SliceFilter | None = None,
) -> None:
    """The matrix and the selected cell's gallery (of the slice ``flt``, when given).

    A fragment: a click on the matrix reruns only this part, not the sidebar or the tables, so
    the browser redraws as little as possible (with many people on one server, the browsers'
    work per click is most of a click's cost). The view is read from the URL here (a fragment
    rerun keeps the last full run's arguments).
    """
    view = parse_view(st.query_params.to_dict(), models, datasets, result.num_classes)
    shown = matrix_section(config_path, view, result, flt)
    if view.cell is None:
        st.info("Click any cell of the confusion matrix to see its images and their CAMs.")
        return
    if view.cell[0] not in shown or view.cell[1] not in shown:
        st.caption("The selected cell is outside the classes shown in the matrix.")
    cell_view(config_path, models, datasets, result, flt)


def _failure_title(exc: UserFacingError, view: ViewState) -> str:
    if isinstance(exc, StoreWriteError):
        return f"The results of {view.model!r} on {view.dataset!r} cannot be saved"
    if isinstance(exc, ModelLoadError):
        return f"Model {view.model!r} could not be loaded"
    if isinstance(exc, DatasetError):
        return f"Dataset {view.dataset!r} could not be read"
    if isinstance(exc, ClassCountMismatchError):
        return f"Model {view.model!r} does not fit dataset {view.dataset!r}"
    return f"Cannot evaluate {view.model!r} on {view.dataset!r}"


def _evaluation(config_path: str, view: ViewState) -> Results:
    job = resources.evaluation_job(config_path, view.model, view.dataset)
    if not job.finished:
        bar = st.sidebar.progress(0.0, text="Predicting…")
        while not job.finished:
            bar.progress(job.done / max(job.total, 1), text=f"Predicting {job.done}/{job.total}…")
            time.sleep(0.2)
        bar.empty()
    return resources.evaluation(config_path, view.model, view.dataset)


def _tables(config_path: str, view: ViewState) -> None:
    """Most confused pairs (a row opens its cell) and per-class metrics, folded above the matrix.

    Folded like the overview: a table is built and drawn only while it is open, so a new
    visitor's browser does not load and draw two data grids nobody has asked for yet.
    """
    pairs_col, classes_col = st.columns(2)
    for parent, label, key, draw in (
        (pairs_col, "Most confused pairs", "pairs-open", _pairs_table),
        (classes_col, "Per-class precision, recall and F1", "classes-open", _class_table),
    ):
        box = folded(parent, label, key)
        if box is not None:
            with box:
                draw(config_path, view)


def _pairs_table(config_path: str, view: ViewState) -> None:
    pairs = resources.confused_pairs(config_path, view.model, view.dataset, 15)
    result = resources.evaluation(config_path, view.model, view.dataset)
    fixed = corrections.active(config_path, view.dataset, result)
    if fixed is not None:
        pairs = top_confused_pairs(fixed.predictions, result.classes, 15)
    if pairs.empty:
        st.success("No errors: every image is on the diagonal.")
        return
    shown = pairs[["true_name", "pred_name", "count"]].rename(
        columns={"true_name": "true", "pred_name": "predicted"}
    )
    key = f"pairs-{view.model}-{view.dataset}"
    st.dataframe(
        shown,
        key=key,
        on_select=partial(_on_pair, key, pairs),
        selection_mode="single-row",
        hide_index=True,
        width="stretch",
    )
    st.caption("Select a row to open that cell.")


def _class_table(config_path: str, view: ViewState) -> None:
    table = resources.class_metrics(config_path, view.model, view.dataset)
    result = resources.evaluation(config_path, view.model, view.dataset)
    fixed = corrections.active(config_path, view.dataset, result)
    if fixed is not None:
        table = fixed.metrics
    st.dataframe(
        table,
        hide_index=True,
        width="stretch",
        column_config={
            c: st.column_config.NumberColumn(format="%.3f") for c in ("precision", "recall", "f1")
        },
    )


def _on_pair(key: str, pairs) -> None:  # type: ignore[no-untyped-def]
    rows = st.session_state[key].selection.rows
    if rows:
        true, pred = int(pairs.iloc[rows[0]]["true"]), int(pairs.iloc[rows[0]]["pred"])
        set_params({"cell": f"{true},{pred}"}, reset=("page", "pattern"))


main()
