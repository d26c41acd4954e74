"""Patterns: groups of a cell's images whose Grad-CAM maps agree on one place, most suspicious
first. Each card shows the cell, its images, the score and the mean predicted- and true-class
maps over an example image; its heading opens the Error-analysis cell view filtered to the
pattern's images (a link: model, dataset, cell and pattern live in the URL).
"""

from __future__ import annotations

import numpy as np
import streamlit as st

from core.analysis.patterns import FLAG_SCORE, Patterns
from dashboard.parts.page import evaluation_or_stop, project_view
from dashboard.parts.patterns import cell_link, grid, panels, pattern_card
from dashboard.parts.sidebar import model_and_dataset
from dashboard.state import resources
from dashboard.state.analyses import patterns_or_reason
from dashboard.state.url import bind

PAGE_SIZE = 12
SHOW = {
    "all": "errors, then correct predictions",
    "errors": "errors only",
    "correct": "correct predictions only",
}


def main() -> None:
    project = project_view()
    config_path, view = project.config_path, project.view
    params = st.query_params.to_dict()
    show = params.get("show", "all") if params.get("show") in SHOW else "all"
    flagged_only = params.get("flagged", "1") != "0"
    with st.sidebar:
        model_and_dataset(project, ("page",))
        bind(st.selectbox, "Show", "show", show, list(SHOW), ("page",), format_func=SHOW.get)
        st.checkbox(
            f"Flagged only (score ≥ {FLAG_SCORE:g})",
            value=flagged_only,
            key="patterns-flagged",
            on_change=_on_flagged,
        )
    st.title("Patterns: where many images made the model look at one place")
    result = evaluation_or_stop(config_path, view)
    with st.spinner(f"Finding patterns in {len(result.index):,} images…"):
        found, reason = patterns_or_reason(config_path, view.model, view.dataset, result)
    if reason:
        st.warning(reason, icon=":material/info:")
        return
    if found is None:
        st.info(f"Finding patterns in {len(result.index):,} images… (the first time only)")
        _when_ready(config_path, view.model, view.dataset)
        return
    st.caption(
        "Per cell (true → predicted), the predicted-class Grad-CAM maps are clustered; a "
        "pattern is a cluster. Its score is −log10 of how likely it is that this many of the "
        "cell's images look at its place if they looked like images predicted as other "
        f"classes (flagged: score ≥ {FLAG_SCORE:g}). Errors come first. Click a pattern's heading "
        "to see its images."
    )
    shown = _selected(found, show, flagged_only)
    if not len(shown):
        st.success(
            "No pattern matches these filters"
            + (
                ": no group of images is unlikely by chance. Untick “Flagged only” to see every "
                "cluster."
                if flagged_only
                else "."
            )
        )
        return
    pages = -(-len(shown) // PAGE_SIZE)
    page = min(view.page, pages)
    cols = st.columns([2, 5])
    if pages > 1:
        with cols[0]:
            bind(st.number_input, f"Page (of {pages})", "page", page, min_value=1, max_value=pages)
    cols[1].caption(f"{len(shown):,} of {len(found):,} patterns")
    dataset = resources.dataset(config_path, view.dataset, view.model)
    cards = []
    for i in shown[(page - 1) * PAGE_SIZE : page * PAGE_SIZE]:
        pattern = found[int(i)]
        urls, example = panels(dataset, result, pattern, view.opacity)
        cards.append(pattern_card(pattern, result.classes, urls, example, cell_link(view, pattern)))
    st.html(grid(cards, 3))


def _selected(found: Patterns, show: str, flagged_only: bool) -> np.ndarray:
    keep = np.ones(len(found), bool)
    diagonal = found.true == found.pred
    if show == "errors":
        keep &= ~diagonal
    elif show == "correct":
        keep &= diagonal
    if flagged_only:
        keep &= found.score >= FLAG_SCORE
    return np.flatnonzero(keep)


def _on_flagged() -> None:
    st.query_params["flagged"] = "1" if st.session_state["patterns-flagged"] else "0"
    st.query_params.pop("page", None)


@st.fragment(run_every=2.0)
def _when_ready(config_path: str, model: str, dataset: str) -> None:
    """Every 2 s until the background pass is done, then the page again."""
    result = resources.evaluation(config_path, model, dataset)
    found, reason = patterns_or_reason(config_path, model, dataset, result)
    if found is not None or reason:
        st.rerun(scope="app")


main()
