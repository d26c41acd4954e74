"""Patterns: groups of a cell's images whose Grad-CAM maps agree on one place, most suspicious
first. Each card shows the cell, its images, the score and the mean predicted- and true-class
maps over an example image; its heading opens the Error-analysis cell view filtered to the
pattern's images (a link: model, dataset, cell and pattern live in the URL).

Up to :data:`~dashboard.state.analyses.WAIT_FOR_PATTERNS_UP_TO` images the page waits for the
ranking; past that it is drawn at once and its cards come in a fragment that polls the
background pass and stops its own timer once they are drawn (no page rerun).
"""

from __future__ import annotations

import numpy as np
import streamlit as st

from core import Results
from core.analysis.patterns import FLAG_SCORE, Patterns
from core.analysis.slices import SliceError
from dashboard.parts.notes import author_input
from dashboard.parts.page import evaluation_or_stop, project_view
from dashboard.parts.patterns import cell_link, panels, pattern_card
from dashboard.parts.sidebar import model_and_dataset
from dashboard.parts.slice_bar import slice_bar
from dashboard.parts.verdicts import pattern_grid, stored_labels
from dashboard.state import resources, slicing
from dashboard.state.analyses import patterns_or_reason
from dashboard.state.polling import until_done
from dashboard.state.settings import settings
from dashboard.state.url import bind
from dashboard.state.view_state import ViewState

PAGE_SIZE = 12
POLL_SECONDS = 2.0  # how often the page looks for a large evaluation's ranking
SHOW = {
    "all": "errors, then correct predictions",
    "errors": "errors only",
    "correct": "correct predictions only",
}


def main() -> None:
    project = project_view()
    config_path, view = project.config_path, project.view
    show, flagged_only = _filters()
    with st.sidebar:
        model_and_dataset(project, ("page",))
        bind(st.selectbox, "Show", "show", show, list(SHOW), ("page",), format_func=SHOW.get)
        st.checkbox(
            f"Flagged only (score ≥ {FLAG_SCORE:g})",
            value=flagged_only,
            key="patterns-flagged",
            on_change=_on_flagged,
        )
    author_input(settings())  # the name findings are pinned under
    st.title("Patterns: where many images made the model look at one place")
    result = evaluation_or_stop(config_path, view)
    slice_bar(project, result)
    with st.spinner(f"Finding patterns in {len(result.index):,} images…"):
        found, reason = patterns_or_reason(config_path, view.model, view.dataset, result)
    until_done(_ranking, POLL_SECONDS, found is None and not reason)(config_path, result)


def _filters() -> tuple[str, bool]:
    """What the URL shows: "all", "errors" or "correct", and whether flagged patterns only."""
    params = st.query_params.to_dict()
    show = params.get("show", "all") if params.get("show") in SHOW else "all"
    return show, params.get("flagged", "1") != "0"


def _ranking(config_path: str, result: Results) -> bool:
    """The ranked pattern cards, a page of them, or why there are none (a fragment: until the
    background pass is done, it says the patterns are being found and polls). Returns whether
    the pass is done. The view is read from the URL: the page number is a widget in here."""
    view = project_view().view
    show, flagged_only = _filters()
    found, reason = patterns_or_reason(config_path, view.model, view.dataset, result)
    if reason:
        st.warning(reason, icon=":material/info:")
        return True
    if found is None:
        st.info(f"Finding patterns in {len(result.index):,} images… (the first time only)")
        return False
    st.caption(
        "Per cell (true → predicted), the predicted-class Grad-CAM maps are clustered; a "
        "pattern is a cluster. Its score is −log10 of how likely it is that this many of the "
        "cell's images look at its place if they looked like images predicted as other "
        f"classes (flagged: score ≥ {FLAG_SCORE:g}). Errors come first. Click a pattern's heading "
        "to see its images."
    )
    in_slice = _in_slice(config_path, view, result, found)
    shown = _selected(found, show, flagged_only)
    if in_slice is not None:  # only patterns with images in the slice
        shown = shown[in_slice[shown] > 0]
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
        return True
    pages = -(-len(shown) // PAGE_SIZE)
    page = min(view.page, pages)
    cols = st.columns([2, 5])
    if pages > 1:
        with cols[0]:
            bind(st.number_input, f"Page (of {pages})", "page", page, min_value=1, max_value=pages)
    cols[1].caption(f"{len(shown):,} of {len(found):,} patterns")
    dataset = resources.dataset(config_path, view.dataset, view.model)
    on_page = [found[int(i)] for i in shown[(page - 1) * PAGE_SIZE : page * PAGE_SIZE]]
    cards = []
    for pattern, label in zip(on_page, stored_labels(result, on_page), strict=True):
        if in_slice is not None:
            label += (
                f' <span class="pattern-in-slice">{in_slice[pattern.rank]:,} in the slice</span>'
            )
        urls, example = panels(dataset, result, pattern, view.opacity)
        link = cell_link(view, pattern)
        cards.append(pattern_card(pattern, result.classes, urls, example, link, label=label))
    pattern_grid(config_path, view, result, on_page, cards, 3)  # with Test this pattern
    return True


def _in_slice(
    config_path: str, view: ViewState, result: Results, found: Patterns
) -> np.ndarray | None:
    """Per pattern, how many of its images are in the URL's slice (None: no slice, or one that
    does not fit; the slice bar says why)."""
    try:
        flt = slicing.slice_filter(config_path, view.model, view.dataset, result, view.where)
    except SliceError:
        return None
    if flt is None or not len(found):
        return None
    inside = flt.rows[found.rows].astype(np.int64)
    sums = np.concatenate([[0], np.cumsum(inside)])
    return sums[found.offsets[1:]] - sums[found.offsets[:-1]]


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


main()
