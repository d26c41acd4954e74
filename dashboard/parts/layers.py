"""The gallery's target layer: the view's layer among the model's candidates, each candidate's
label in the picker, and its faithfulness score (scored in the background, once per model and
method: :func:`dashboard.state.analyses.layer_faithfulness`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import streamlit as st

from dashboard.state import analyses, resources
from dashboard.state.polling import DIALOG_OPEN
from dashboard.state.view_state import ViewState

if TYPE_CHECKING:
    from core.explain.cam import LayerInfo
    from core.explain.layer_trust import LayerScore

__all__ = ["layer_caption", "layer_choice", "layer_label", "layer_labels"]


def layer_choice(config_path: str, view: ViewState) -> tuple[list[LayerInfo], str | None]:
    """The model's candidate layers and the one in use: the URL's if valid, else the default."""
    layers, default_layer = resources.layers(config_path, view.model)
    return layers, view.layer if view.layer in {info.name for info in layers} else default_layer


def layer_label(info: LayerInfo) -> str:
    kind = {"tokens": " (tokens)", "channels_last": " (channels last)"}.get(info.layout, "")
    return f"{info.name} · {info.type_name} · {'×'.join(str(s) for s in info.shape)}{kind}"


def _layer_state(config_path: str, view: ViewState) -> dict[str, LayerScore] | None:
    if view.method == "Saliency":
        return {}
    fingerprint = resources.evaluation(config_path, view.model, view.dataset).fingerprint
    return analyses.layer_faithfulness(
        config_path, view.model, view.dataset, fingerprint, view.method
    )


def layer_labels(config_path: str, view: ViewState) -> dict[str, str]:
    """`` · faithfulness 0.98`` per layer once its pass is done (started here if need be)."""
    found = _layer_state(config_path, view)
    return {name: f" · faithfulness {s.median:.2f}" for name, s in (found or {}).items()}


def layer_caption(config_path: str, view: ViewState, layer: str) -> None:
    """What the layer scores are; while they are computed, a poll that reruns the page when
    they are ready."""
    from core.analysis.trust import LAYER_SAMPLE

    found = _layer_state(config_path, view)
    if found is None:
        st.session_state["layer-poll-inline"] = True
        st.fragment(run_every=2.0)(_wait_for_layers)(config_path, view)
        return
    chosen = found.get(layer)
    if chosen is None:
        return
    best = max(found.values(), key=lambda s: s.median)
    st.caption(
        f"Faithfulness of each layer's {view.method} maps: median share of the predicted "
        f"class's probability lost when the map's region is removed, on a fixed sample of "
        f"{LAYER_SAMPLE} images (random maps of the same cells: {chosen.random_median:.2f} at "
        f"{layer}). Highest: {best.layer} ({best.median:.2f})."
    )


def _wait_for_layers(config_path: str, view: ViewState) -> None:
    from core.analysis.trust import LAYER_SAMPLE

    inline = st.session_state.pop("layer-poll-inline", False)  # inside the page's own run
    ready = _layer_state(config_path, view) is not None
    if ready and not inline and not st.session_state.get(DIALOG_OPEN):
        st.rerun()  # the picker then shows every layer's score; this poll is not made again
    st.caption(
        f"Scoring the faithfulness of every layer's maps on {LAYER_SAMPLE} images in the "
        "background (once per model and method)…"
    )
