"""The sidebar's shared pieces: the model and dataset pickers, the evaluation's summary
(accuracy, counts, unreadable files) and the gallery settings (method, layer, opacity, sort)."""

from __future__ import annotations

from collections.abc import Iterable

import pandas as pd
import streamlit as st

from core import Results, accuracy
from dashboard.parts.layers import layer_caption, layer_choice, layer_label, layer_labels
from dashboard.parts.page import ProjectView
from dashboard.state import resources
from dashboard.state.polling import DIALOG_OPEN
from dashboard.state.slicing import SliceFilter
from dashboard.state.url import bind
from dashboard.state.view_state import METHODS, PAGE_SIZES, SORTS, ViewState

__all__ = [
    "GALLERY_SETTINGS_OPEN",
    "compact_count",
    "gallery_settings",
    "model_and_dataset",
    "sidebar_summary",
]


def model_and_dataset(
    project: ProjectView, reset: Iterable[str], model_reset: Iterable[str] = ()
) -> None:
    """The view's model and dataset as two select boxes (in the current container); a change
    clears the ``reset`` parameters, and a change of model ``model_reset`` too."""
    view = project.view
    resets = tuple(reset)
    bind(st.selectbox, "Model", "model", view.model, project.models, (*resets, *model_reset))
    bind(st.selectbox, "Dataset", "dataset", view.dataset, project.datasets, resets)


def sidebar_summary(
    result: Results, flt: SliceFilter | None = None, predictions: pd.DataFrame | None = None
) -> None:
    """Accuracy, counts (of the slice ``flt``, when given; of ``predictions``, e.g. with
    corrected labels, instead of the result's) and the files that could not be read."""
    every = result.predictions if predictions is None else predictions
    table = every if flt is None else every[flt.positions]
    errors = int((table["true"] != table["pred"]).sum())
    with st.sidebar:
        st.metric("Accuracy", f"{accuracy(table):.2%}")
        # two counts a row: three left ~70 px each, too narrow for "1.0M" at the metric's size
        images, wrong = st.columns(2)
        images.metric("Images", compact_count(len(table)))
        wrong.metric("Errors", compact_count(errors))
        where = " in the slice" if flt is not None else ""
        skipped = len(result.skipped)
        st.caption(f"{len(table):,} images{where} · {errors:,} errors · {skipped:,} skipped")
        for note in result.notes:
            st.warning(note, icon=":material/difference:")
        if result.skipped:
            with st.expander(f"{len(result.skipped):,} unreadable file(s) skipped"):
                shown = result.skipped[:200]
                st.text("\n".join(f"{s.path}: {s.reason}" for s in shown))
                if len(result.skipped) > len(shown):
                    st.caption(f"… and {len(result.skipped) - len(shown):,} more (see the CLI)")


def compact_count(n: int) -> str:
    """A count that fits a narrow metric: 999, 5.0k, 99.9k, 100k, 1.2M."""
    if n < 1_000:
        return str(n)
    for size, suffix in ((1_000_000_000, "B"), (1_000_000, "M"), (1_000, "k")):
        if n >= size:
            value = n / size
            return f"{value:.1f}{suffix}" if value < 100 else f"{value:.0f}{suffix}"
    return str(n)  # unreachable


GALLERY_SETTINGS_OPEN = "gallery-settings-open"  # the folded settings' state (session state)


def gallery_settings(config_path: str, view: ViewState, result: Results) -> None:
    """Sidebar: how every cell's gallery is drawn (method, layer, opacity) and ordered.

    These live outside the matrix fragment: a click on a cell does not redraw them, which
    keeps a click cheap for the browser when many people share the server. They are folded
    (a caption says what is in use) and built only while open: a new visitor's first page
    then draws one expander instead of four selectboxes and a slider, whose code the browser
    would otherwise load and start (0.8 s of a page load on 2 cores; ``bench/scale.py``).
    They are drawn while the model still loads (the layer the stored maps were made at stands
    for its layer list until the next rerun), so the page never reruns by itself.
    """
    ready = resources.model_ready(config_path, view.model)
    if ready:
        layers, layer = layer_choice(config_path, view)
    else:
        layers, layer = [], view.layer or result.meta.get("map_layer")
    with st.sidebar:
        if ready:
            from core.data.models import describe_preprocessing

            loaded = resources.model(config_path, view.model)
            st.caption(f"Preprocessing: {describe_preprocessing(loaded.spec)}")
            for note in loaded.warnings:
                st.caption(note)
        st.header("Gallery")
        at = f" at layer {layer}" if layer is not None else ""
        st.caption(
            f"{view.method}{at} · opacity {view.opacity:g} · {SORTS[view.sort][2]} · "
            f"{view.page_size} per page"
        )
        box = st.expander("Gallery settings", key=GALLERY_SETTINGS_OPEN, on_change="rerun")
        if not box.open:
            return
    labels = {info.name: layer_label(info) for info in layers}
    with box:
        bind(st.selectbox, "Method", "method", view.method, list(METHODS))
        if layer is not None and ready:
            scores = layer_labels(config_path, view)  # starts their pass if need be
            labels = {name: text + scores.get(name, "") for name, text in labels.items()}
            bind(st.selectbox, "Target layer", "layer", layer, list(labels), format_func=labels.get)
            layer_caption(config_path, view, layer)
        elif not ready:
            st.selectbox("Target layer", [layer or "(default)"], disabled=True)
            st.caption("The model is loading: its layers are listed once it has loaded.")
            _list_layers_when_loaded(config_path, view.model)
        bind(st.slider, "Overlay opacity", "opacity", view.opacity, min_value=0.0, max_value=1.0)
        cols = st.columns([3, 2])
        with cols[0]:
            bind(
                st.selectbox,
                "Sort by",
                "sort",
                view.sort,
                list(SORTS),
                ("page",),
                format_func=lambda s: SORTS[s][2],
            )
        with cols[1]:
            bind(st.selectbox, "Per page", "page_size", view.page_size, list(PAGE_SIZES), ("page",))


@st.fragment(run_every=1.0)
def _list_layers_when_loaded(config_path: str, model: str) -> None:
    """While the gallery settings are open and the model loads: every second, and once it has
    loaded, the page again, with the layer list (the settings are only open when someone is
    using them, so this rerun does not land on a click elsewhere; never with a dialog open)."""
    if resources.model_ready(config_path, model) and not st.session_state.get(DIALOG_OPEN):
        st.rerun(scope="app")
