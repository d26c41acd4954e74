"""Similar images in the Inspect dialog: the nearest images in embedding space, with both maps.

Answers "is this error one of many like it?": the k nearest images by the classifier head's
input (exact search over the stored embeddings), with their labels, predictions and the same
cards as the gallery.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from core.analysis.similar import neighbours_table
from dashboard.parts.gallery import gallery_page
from dashboard.state import analyses, resources
from dashboard.state.view_state import ViewState

__all__ = ["SIMILAR", "similar_section"]

SIMILAR = 6  # neighbours shown (three rows of the two-column grid)


def similar_section(config_path: str, view: ViewState, row: pd.Series) -> None:
    """The ``SIMILAR`` images nearest to ``row`` (a row of ``Results.predictions``)."""
    result = resources.evaluation(config_path, view.model, view.dataset)
    st.markdown("**Similar images** (nearest by the classifier head's input)")
    if not result.has_embeddings:
        st.caption("These results hold no embeddings: evaluate with embeddings on to see them.")
        return
    copy = analyses.search_copy(config_path, view.model, view.dataset, result.fingerprint)
    prepared = copy.result() if copy.done() and copy.exception() is None else None
    found = neighbours_table(result, int(row["index"]), SIMILAR, prepared)
    positions = np.searchsorted(result.index, found["index"].to_numpy())
    rows = result.predictions.iloc[positions]
    names = result.classes
    same = int((rows["true"] == int(row["true"])).sum())
    errors = int((rows["true"] != rows["pred"]).sum())
    also = int(((rows["true"] == int(row["true"])) & (rows["pred"] == int(row["pred"]))).sum())
    st.caption(
        f"{same} of {len(rows)} share its true class {names[int(row['true'])]}; {errors} are "
        f"errors; {also} are in its cell (true {names[int(row['true'])]} → predicted "
        f"{names[int(row['pred'])]}). Distances: "
        + ", ".join(f"{d:.3g}" for d in found["distance"])
    )
    heading = f"{len(rows)} images nearest to {row['path']}"
    gallery, problem, _ = gallery_page(config_path, view, result, rows, heading)
    if problem:
        st.warning(problem)
    st.html(gallery.replace('class="cam-gallery"', 'class="cam-gallery cam-similar"', 1))
