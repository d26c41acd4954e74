"""The Inspect dialog's deletion and insertion curves: how fast the class probability falls as
the map's most important cells are removed (and rises as they are inserted), against a random
order of the same cells."""

from __future__ import annotations

from typing import TYPE_CHECKING

import streamlit as st

from core.errors import UserFacingError

if TYPE_CHECKING:
    import plotly.graph_objects as go
    import torch

    from core.data.models import LoadedModel
    from core.explain.faithfulness import Curves

__all__ = ["curves_figure", "curves_panel"]


def curves_figure(curves: Curves, class_name: str) -> go.Figure:
    """Deletion and insertion curves (solid) and those of a random order of the same cells
    (dashed), AUCs in the legend."""
    import plotly.graph_objects as go

    x = curves.fraction * 100
    fig = go.Figure()
    lines = [
        ("deletion", curves.deletion, curves.deletion_auc, "#d62728", "solid"),
        ("insertion", curves.insertion, curves.insertion_auc, "#1f77b4", "solid"),
        ("random deletion", curves.random_deletion, curves.random_deletion_auc, "#d62728", "dash"),
        (
            "random insertion",
            curves.random_insertion,
            curves.random_insertion_auc,
            "#1f77b4",
            "dash",
        ),
    ]
    for name, y, auc, color, dash in lines:
        fig.add_trace(
            go.Scatter(
                x=x,
                y=y,
                mode="lines",
                name=f"{name} (AUC {auc:.3f})",
                line={"color": color, "dash": dash, "width": 2 if dash == "solid" else 1.5},
                hovertemplate=f"{name}: %{{x:.0f}} % of cells → p = %{{y:.3f}}<extra></extra>",
            )
        )
    cells = f"{curves.grid[0]}×{curves.grid[1]}"
    fig.update_layout(
        height=320,
        margin={"l": 10, "r": 10, "t": 30, "b": 10},
        title={"text": f"p({class_name}) as the map's {cells} cells go, most important first"},
        xaxis={"title": "cells removed (deletion) / inserted (insertion), %", "range": [0, 100]},
        yaxis={"title": f"p({class_name})", "range": [0, 1.02]},
        legend={"orientation": "h", "y": -0.3},
    )
    return fig


def curves_panel(
    model: LoadedModel,
    image: torch.Tensor,
    cam_map: torch.Tensor,
    cls: int,
    method: str,
    layer: str | None,
    class_name: str,
) -> None:
    """Inspect: the deletion and insertion curves of the map shown, on demand."""
    from core.analysis.trust import map_grid
    from core.explain.faithfulness import deletion_insertion

    if not st.toggle(
        "Deletion and insertion curves",
        key="inspect-curves",
        help="Remove (deletion) or insert (into a blurred copy) the map's grid cells, most "
        "important first, and follow the class probability. A faithful map falls fast on "
        "deletion (low AUC) and rises fast on insertion (high AUC); the dashed lines are a "
        "random order of the same cells (RISE, Petsiuk et al. 2018).",
    ):
        return
    try:
        grid = map_grid(model, method, layer)
        with st.spinner("Computing the curves…"):
            curves = deletion_insertion(
                model.module, image.to(model.device), cam_map, cls, grid, seed=0
            )
    except (ValueError, UserFacingError) as exc:
        st.warning(f"The curves cannot be computed: {exc}")
        return
    st.plotly_chart(curves_figure(curves, class_name), width="stretch", key="inspect-curves-fig")
    better = (curves.deletion_auc < curves.random_deletion_auc) + (
        curves.insertion_auc > curves.random_insertion_auc
    )
    st.caption(
        f"Deletion AUC {curves.deletion_auc:.3f} (random {curves.random_deletion_auc:.3f}), "
        f"insertion AUC {curves.insertion_auc:.3f} (random {curves.random_insertion_auc:.3f}): "
        f"the map beats a random order of its cells on {better} of 2. Deleted cells become the "
        "dataset mean; insertion starts from a blurred copy (Gaussian, sigma 5)."
    )
