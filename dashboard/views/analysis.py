"""Error analysis: the clickable confusion matrix and the selected cell's images with CAMs."""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial

import streamlit as st

from core import (
    ClassCountMismatchError,
    DatasetError,
    ModelLoadError,
    Results,
    UserFacingError,
    block_classes,
    block_sums,
    focus_classes,
    most_confused_classes,
)
from core.results import StoreWriteError
from dashboard import analyses, resources
from dashboard.calibration_ui import calibration_section
from dashboard.matrix_figure import (
    PARAM,
    MatrixChart,
    cell_of_selection,
    matrix_chart,
    overview_chart,
)
from dashboard.notes_ui import author_input
from dashboard.settings import settings
from dashboard.trust import DIALOG_OPEN
from dashboard.url import bind, set_params
from dashboard.view_state import COLOR_MODES, ViewState, parse_view
from dashboard.widgets import (
    cell_view,
    error_panel,
    gallery_settings,
    project_view,
    sidebar_summary,
)

TOP_N_THRESHOLD = 30  # past this many classes, offer the "most confused classes" view
TOP_N_OPTIONS = [0, 10, 20, 30, 50]
FULL_MATRIX_LIMIT = 100  # past this many classes "all" is not offered: the overview replaces it
DEFAULT_TOP = 20  # what a large matrix shows first
OVERVIEW_BLOCKS = 40  # the overview of a large matrix: at most 40 × 40 clickable blocks


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
        bind(
            st.selectbox,
            "Model",
            "model",
            view.model,
            models,
            reset=("cell", "page", "layer", "pattern"),
        )
        bind(
            st.selectbox,
            "Dataset",
            "dataset",
            view.dataset,
            datasets,
            reset=("cell", "page", "pattern"),
        )
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
    tables = st.container()
    # The matrix goes out before the tables and the sidebar's settings (their places on the page
    # do not depend on the order): a new visitor's browser starts loading the chart's
    # JavaScript, the largest part of a first page, while it draws the rest.
    explorer(config_path, models, datasets, result)
    calibration_section(config_path, models, datasets, result)
    with tables:
        _tables(config_path, view)
    sidebar_summary(result)
    matrix_settings(view, result.num_classes)
    # Drawn whether or not the model has loaded (its layer list follows at the next rerun), so
    # the page never reruns by itself when the load ends: a rerun could swallow a click.
    try:
        gallery_settings(config_path, view, result)
    except UserFacingError as exc:
        error_panel(f"{_failure_title(exc, view)}; its stored results are shown", exc)
    resources.warm_up(config_path, view.model, view.dataset, result.fingerprint)
    author_input(server)


@st.fragment
def explorer(config_path: str, models: list[str], datasets: list[str], result: Results) -> None:
    """The matrix and the selected cell's gallery.

    A fragment: a click on the matrix reruns only this part, not the sidebar or the tables, so
    the browser redraws as little as possible (with many people on one server, the browsers'
    work per click is most of a click's cost). The view is read from the URL here (a fragment
    rerun keeps the last full run's arguments).
    """
    view = parse_view(st.query_params.to_dict(), models, datasets, result.num_classes)
    shown = _matrix(config_path, view, result)
    if view.cell is None:
        st.info("Click any cell of the confusion matrix to see its images and their CAMs.")
        return
    if view.cell[0] not in shown or view.cell[1] not in shown:
        st.caption("The selected cell is outside the classes shown in the matrix.")
    cell_view(config_path, models, datasets, result)


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
    box = _folded(st, f"Overview of all {n:,} classes: click a block to zoom in", "overview-open")
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


def _matrix(config_path: str, view: ViewState, result: Results) -> list[int]:
    counts = resources.matrix(config_path, view.model, view.dataset)
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
    scope = (result.fingerprint, view.color, tuple(shown), marked)
    state = st.session_state
    if state.get("chart_scope") != scope or state.get("chart_cell") != view.cell:
        # A change that did not come from a click on this chart: rebuild it, selection from the URL.
        state["chart_scope"], state["chart_cell"] = scope, view.cell
        state["chart_version"] = state.get("chart_version", 0) + 1
        # A click on the chart reuses this session's chart: the browser keeps what it drew.
        flagged = analyses.flagged_matrix(*found) if marked else None
        state["chart"] = matrix_chart(counts, classes, view.color, shown, view.cell, flagged)
    chart = state["chart"]
    key = f"matrix-{state['chart_version']}"
    _draw(chart, key, partial(_on_click, key))
    st.caption(
        f"{int(counts.sum()):,} images · rows: true class · columns: predicted class"
        + ("" if marked else " · finding suspected label errors (marked when found)…")
    )
    if not marked:
        _mark_when_found(*found)
    elif unsaved := analyses.quality(*found).unsaved:
        st.caption(f"Suspected label errors are kept in memory while the server runs: {unsaved}")
    if n > TOP_N_THRESHOLD:
        _overview(view, result, counts)  # after the matrix: the page's first chart is the matrix
    return shown


@st.fragment(run_every=2.0)
def _mark_when_found(config_path: str, model: str, dataset: str, fingerprint: str) -> None:
    """Every 2 s until the label-quality pass is done, then the matrix again, with its marks (not
    while an Inspect dialog is open)."""
    ready = analyses.quality_ready(config_path, model, dataset, fingerprint)
    if ready and not st.session_state.get(DIALOG_OPEN):
        st.rerun(scope="app")


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


def _on_click(key: str) -> None:
    cell = cell_of_selection(st.session_state[key].selection)
    st.session_state["chart_cell"] = cell  # the chart already shows it: keep the figure as is
    if cell is None:
        set_params({}, reset=("cell", "page", "pattern"))
    else:
        set_params({"cell": f"{cell[0]},{cell[1]}"}, reset=("page", "pattern"))


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
        box = _folded(parent, label, key)
        if box is not None:
            with box:
                draw(config_path, view)


def _folded(parent, label: str, key: str):  # type: ignore[no-untyped-def]
    """An expander in ``parent`` that is built only while open (opening it reruns): the open
    expander to fill, or None while it is closed."""
    box = parent.expander(label, key=key, on_change="rerun")
    return box if box.open else None


def _pairs_table(config_path: str, view: ViewState) -> None:
    pairs = resources.confused_pairs(config_path, view.model, view.dataset, 15)
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
