"""The Inspect dialog: one image of a gallery page, large, with the map of any class and method,
its deletion and insertion curves, similar images, layer activations, and its tags and notes."""

from __future__ import annotations

import pandas as pd
import streamlit as st
from PIL import Image

from core.data.datasets import dataset_key
from core.errors import reason_of
from dashboard.parts.curves import curves_panel
from dashboard.parts.findings import image_pin, pin_button
from dashboard.parts.notes import editor
from dashboard.parts.similar import similar_section
from dashboard.state import resources
from dashboard.state.polling import DIALOG_OPEN
from dashboard.state.settings import settings
from dashboard.state.view_state import METHODS, ViewState

__all__ = ["inspect_picker"]


def inspect_picker(
    config_path: str, view: ViewState, rows: pd.DataFrame, names: tuple[str, ...], layer: str | None
) -> None:
    """One picker for the large view (instead of a button per card: fewer elements to draw)."""
    key = "inspect-pick"
    paths = list(rows["path"])
    st.selectbox(
        "Inspect an image: any class, layer activations, tags and notes",
        paths,
        index=None,
        placeholder="Choose an image of this page…",
        key=key,
        on_change=_picked,
        args=(key,),
    )
    path = st.session_state.pop("inspect-path", None)
    if path in paths:
        _inspect(config_path, view, rows.iloc[paths.index(path)], names, layer)


def _picked(key: str) -> None:
    st.session_state["inspect-path"] = st.session_state[key]
    st.session_state[DIALOG_OPEN] = True  # the badge polls must not rerun the page
    st.session_state[key] = None  # choosing the same image again opens it again


@st.dialog("Inspect image", width="large")
def _inspect(
    config_path: str, view: ViewState, row: pd.Series, names: tuple[str, ...], layer: str | None
) -> None:
    import torch

    from core.analysis.panels import enlarge
    from core.explain.cam import METHODS as CAM_FUNCTIONS
    from core.explain.cam import layer_activations
    from core.explain.overlay import overlay

    model = resources.model(config_path, view.model)
    dataset = resources.dataset(config_path, view.dataset, view.model)
    probs = resources.evaluation(config_path, view.model, view.dataset).probs([row["index"]])[0]
    with st.container(horizontal=True, vertical_alignment="center"):
        st.markdown(f"**{row['path']}** · true {names[int(row['true'])]}")
        pin = image_pin(row, names)
        pin_button(pin, config_path=config_path, view=view, key="pin:image", label="Pin image")
    try:  # the gallery's own read: what a card shows, this shows
        image = dataset.image(row["path"], 3)
        x = model.normalize(model.resize(dataset.load(row["path"], model.spec.channels)))[None]
    except Exception as exc:  # the file changed or vanished since the evaluation
        st.warning(f"This image cannot be shown: {reason_of(exc)}")
        return
    cols = st.columns(2)
    cls = cols[0].selectbox(
        "Map for class",
        range(len(names)),
        index=int(row["pred"]),
        format_func=lambda i: f"{names[i]} ({probs[i]:.1%})",
    )
    method = cols[1].selectbox("Method", METHODS, index=METHODS.index(view.method))
    left, right = st.columns(2)
    left.image(enlarge(image, 320), caption="image", width="stretch", output_format="PNG")
    try:
        cam_map = CAM_FUNCTIONS[method](
            model.module, x.to(model.device), torch.tensor([cls]), layer=layer
        )
        right.image(
            enlarge(overlay(image, cam_map[0], alpha=view.opacity), 320),
            caption=f"{method} · {names[cls]}" + (f" · layer {layer}" if layer else ""),
            width="stretch",
            output_format="PNG",
        )
        curves_panel(model, x[0], cam_map[0], cls, method, layer, names[cls])
    except ValueError as exc:
        right.warning(str(exc))
    similar_section(config_path, view, row)
    layers, _ = resources.layers(config_path, view.model)
    layer_names = [info.name for info in layers]
    if layer_names:
        chosen = st.selectbox(
            "Activations of layer",
            layer_names,
            index=layer_names.index(layer) if layer in layer_names else len(layer_names) - 1,
        )
        acts = layer_activations(model.module, x.to(model.device), chosen, top_n=8)
        _activation_grid(image, acts, chosen)
    else:
        st.caption("This model has no layer with a 4-D output: no activations to show.")
    st.divider()
    editor(
        resources.notes_store(config_path, settings().read_only),
        dataset_key(resources.project(config_path).dataset(view.dataset)),
        row["path"],
    )


def _activation_grid(image: Image.Image, acts, chosen: str) -> None:  # type: ignore[no-untyped-def]
    from core.analysis.panels import enlarge
    from core.explain.overlay import overlay

    st.caption(f"top {len(acts.channels)} channels of {chosen} by mean activation")
    grid = st.columns(4)
    for i, (channel, mean) in enumerate(
        zip(acts.channels.tolist(), acts.means.tolist(), strict=True)
    ):
        grid[i % 4].image(
            enlarge(overlay(image, acts.maps[i], alpha=1.0), 160),
            caption=f"channel {channel} · mean {mean:.3g}",
            width="stretch",
            output_format="PNG",
        )
