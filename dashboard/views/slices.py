"""Slices: which part of the test set does the model fail on?

For every metadata column and image property, one row per value (or quantile bin) with its
images, errors and accuracy with a 95 % Wilson interval, columns ordered by how much accuracy
varies across their values; slices whose interval lies wholly below the overall accuracy are
marked. Above them, the slice finder's top conjunctions. A click on a slice applies it: the
Error-analysis page opens restricted to its images (``where=`` in the URL).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import streamlit as st

from core import Results
from core.analysis.slices import Slice
from dashboard.parts.clickable_chart import clickable_chart
from dashboard.parts.notes import author_input
from dashboard.parts.page import ProjectView, evaluation_or_stop, project_view
from dashboard.parts.sidebar import model_and_dataset
from dashboard.parts.slice_bar import apply_slice, saved_slices, slice_bar
from dashboard.state import resources, slicing
from dashboard.state.polling import stop_this_poll
from dashboard.state.settings import settings

EXAMPLES = 8  # images shown per embedding cluster
SHOWN_COLUMNS = 8  # columns drawn at first, those whose accuracy varies most
GO = "slices:go"  # session state: a slice was chosen, open the Error-analysis page with it
ANALYSIS = "views/analysis.py"


def main() -> None:
    project = project_view()
    config_path, view = project.config_path, project.view
    with st.sidebar:
        model_and_dataset(project, ("cols",))
    author_input(settings())
    st.title("Slices: where in the data does the model fail?")
    result = evaluation_or_stop(config_path, view)
    if st.session_state.pop(GO, None):
        params = {"model": view.model, "dataset": view.dataset, "where": view.where}
        st.switch_page(ANALYSIS, query_params={k: v for k, v in params.items() if v})
    slice_bar(project, result)
    slicing.finder_pass(config_path, view.model, view.dataset, result)  # starts it
    overall = float(np.mean(result.true == result.pred)) if len(result.index) else math.nan
    st.caption(
        f"Overall accuracy {overall:.1%} on {len(result.index):,} images. Intervals are 95 % "
        "Wilson intervals; ▼ marks a slice whose interval lies wholly below the overall "
        "accuracy. Click a slice to restrict every page to it."
    )
    _saved(project)
    st.subheader("Where errors concentrate (slice finder)")
    found_slices(project, result)
    st.subheader("Accuracy by column")
    _columns(project, result, overall)


@st.fragment(run_every=2.0)
def found_slices(project: ProjectView, result: Results) -> None:
    """The finder's top slices, polled until its background pass is done (then the poll
    stops its own timer: no page rerun)."""
    view = project.view
    job = slicing.finder_pass(project.config_path, view.model, view.dataset, result)
    if not job.done():
        st.info(
            f"Searching metadata, image properties, embedding clusters and classes of "
            f"{len(result.index):,} images for slices where errors concentrate…",
            icon=":material/manage_search:",
        )
        return
    stop_this_poll()
    if job.exception() is not None:
        st.warning(f"The slice finder could not run: {job.exception()}", icon=":material/error:")
        return
    finding = job.result()
    if not len(finding.found):
        st.success("No slice has a notably higher error rate than the rest.")
        return
    top = finding.found.slices[:10]
    head = st.columns([5, 1.2, 1.2, 2.2, 1.2], vertical_alignment="center")
    for col, text in zip(
        head, ("slice", "images", "errors", "accuracy (95 % CI)", "p"), strict=True
    ):
        col.caption(text)
    for i, item in enumerate(top):
        row = st.columns([5, 1.2, 1.2, 2.2, 1.2], vertical_alignment="center")
        row[0].button(
            item.slice.label(),
            key=f"found:{i}",
            icon=":material/filter_alt:",
            help="Apply this slice: the Error-analysis page shows its images",
            on_click=_choose,
            args=(item.slice.to_param(),),
            width="stretch",
        )
        row[1].write(f"{item.images:,}")
        row[2].write(f"{item.errors:,}")
        row[3].write(f"{item.accuracy:.1%} ({item.ci[0]:.1%}–{item.ci[1]:.1%})")
        row[4].write(f"{item.p_value:.1g}")


def _saved(project: ProjectView) -> None:
    """The slices saved on this server for the dataset: one click applies one."""
    from core.data.datasets import dataset_key
    from core.notes import NotesError

    try:
        named = saved_slices(project).all(dataset_key(project.config.dataset(project.view.dataset)))
    except NotesError as exc:
        st.caption(f"Saved slices cannot be read: {exc}")
        return
    if not named:
        return
    st.subheader("Saved slices")
    with st.container(horizontal=True):
        for i, item in enumerate(named):
            st.button(
                item.name,
                key=f"saved:{i}",
                icon=":material/bookmark:",
                help=f"{_label(item.slice)} · saved by {item.author}, "
                f"{item.created[:16].replace('T', ' ')}",
                on_click=_choose,
                args=(item.slice,),
            )


def _label(param: str) -> str:
    chosen = Slice.from_param(param)
    return chosen.label() if chosen is not None else param


def _columns(project: ProjectView, result: Results, overall: float) -> None:
    view = project.view
    table = slicing.table(project.config_path, view.model, view.dataset, result)
    if table.empty:
        st.info("This dataset has no metadata columns and no image properties yet.")
        return
    order = list(dict.fromkeys(table["column"]))
    default = order[:SHOWN_COLUMNS]
    chosen = st.multiselect(
        "Columns", order, default=default, key=f"slices:cols:{view.model}:{view.dataset}"
    )
    rows = table[table["column"].isin(chosen)]
    if rows.empty:
        return
    key = f"slices:chart:{len(rows)}:{','.join(chosen)}"
    clickable_chart(interval_figure(rows, overall), key, _on_point)
    if "cluster" in chosen:
        cluster_examples(project, result, rows[rows["column"] == "cluster"])
    with st.expander("The same as a table"):
        shown = rows[["column", "label", "images", "errors", "accuracy", "ci_low", "ci_high"]]
        st.dataframe(shown, hide_index=True, width="stretch")


def cluster_examples(project: ProjectView, result: Results, rows: pd.DataFrame) -> None:
    """Folded: a few images of each embedding cluster shown, those nearest its centre, so a
    cluster reads as what it holds (built only while open)."""
    from core.analysis.clusters import stored_clusters
    from dashboard.parts.page import folded

    box = folded(st, "Embedding clusters: example images", "slices:cluster-examples")
    found = stored_clusters(result) if box is not None else None
    if box is None or found is None:
        return
    view = project.view
    data = resources.dataset(project.config_path, view.dataset, view.model)
    paths = result.manifest.column("path")
    with box:
        for value, label, accuracy in zip(
            rows["value"], rows["label"], rows["accuracy"], strict=True
        ):
            number = int(str(value).rsplit(" ", 1)[-1]) - 1
            urls = []
            for row in found.examples(number, EXAMPLES):
                try:
                    urls.append(
                        resources.panel_cache().panels(data, paths[int(row)].as_py(), [], 0.5)[0]
                    )
                except Exception:  # an image that cannot be read: left out
                    continue
            st.caption(f"{label} · accuracy {accuracy:.1%}")
            st.html(
                "<div style='display:flex;gap:4px;flex-wrap:wrap'>"
                + "".join(
                    f"<img src='{u}' style='width:72px;height:72px;object-fit:cover'>" for u in urls
                )
                + "</div>"
            )


def interval_figure(rows: pd.DataFrame, overall: float):  # type: ignore[no-untyped-def]
    """Accuracy per slice as a point with its interval, one line per value, grouped by
    column (most varying first), the overall accuracy as a line; ▼ and red where below."""
    import plotly.graph_objects as go

    below = rows["below"].to_numpy(bool)
    names = [
        f"{'▼ ' if b else ''}{c}: {lab}"
        for c, lab, b in zip(rows["column"], rows["label"], below, strict=True)
    ]
    acc = rows["accuracy"].to_numpy(float)
    fig = go.Figure(
        go.Scatter(
            x=acc,
            y=names,
            mode="markers",
            marker={"size": 11, "color": np.where(below, "#d62728", "#1f77b4")},
            error_x={
                "type": "data",
                "symmetric": False,
                "array": rows["ci_high"].to_numpy(float) - acc,
                "arrayminus": acc - rows["ci_low"].to_numpy(float),
                "thickness": 2,
                "width": 4,
            },
            customdata=rows["param"].to_numpy(object),
            hovertemplate="%{y}<br>accuracy %{x:.1%}<br>%{text}<extra></extra>",
            text=[
                f"{e:,} errors of {i:,} images"
                for e, i in zip(rows["errors"], rows["images"], strict=True)
            ],
        )
    )
    fig.add_vline(x=overall, line_dash="dot", line_color="#555", annotation_text="overall")
    fig.update_layout(
        height=90 + 24 * len(rows),
        margin={"l": 10, "r": 10, "t": 30, "b": 30},
        xaxis={"title": "accuracy", "tickformat": ".0%", "range": [-0.02, 1.02]},
        yaxis={"autorange": "reversed", "type": "category"},
        showlegend=False,
        dragmode=False,
    )
    return fig


def _on_point(data: object) -> bool:
    return bool(data) and _choose(str(data))


def _choose(param: str) -> bool:
    """Apply a slice and open the Error-analysis page with it (False: not a slice)."""
    if Slice.from_param(param) is None:
        return False
    apply_slice(param)
    st.session_state[GO] = True
    return True


main()
