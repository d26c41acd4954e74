"""The slice bar: the slice every page is restricted to, as removable chips at the top.

The slice lives in the URL (``where=site:B;brightness:0.1..0.3``), so a copied link opens the
same slice. The session remembers it too, so that moving to another page from the sidebar
(which starts that page with a fresh URL) keeps it; removing the last chip forgets it.
"""

from __future__ import annotations

import streamlit as st

from core import Results
from core.analysis.slices import SliceError
from dashboard.parts.page import ProjectView
from dashboard.state import slicing
from dashboard.state.slicing import SliceFilter
from dashboard.state.url import set_params

__all__ = ["apply_slice", "slice_bar"]

REMEMBERED = "slice:where"  # session state: the slice of this session's last page
RESET = ("cell", "page", "pattern", "sel", "chart")  # what a new slice makes stale


def apply_slice(param: str) -> None:
    """Restrict every page to the slice ``param`` (its URL form; empty: no slice)."""
    st.session_state[REMEMBERED] = param
    if param:
        set_params({"where": param}, reset=RESET)
    else:
        set_params({}, reset=("where", *RESET))


def slice_bar(project: ProjectView, result: Results) -> SliceFilter | None:
    """Draw the chips of the view's slice and return it as masks (None: the whole set).

    A slice that does not fit this result (a column it lacks, a value it never takes) is
    named in a warning with the reason, and the page shows every image.
    """
    view = project.view
    where = view.where
    if not where and st.session_state.get(REMEMBERED):  # from another page of this session
        where = str(st.session_state[REMEMBERED])
        st.query_params["where"] = where
    if not where:
        return None
    st.session_state[REMEMBERED] = where
    try:
        flt = slicing.slice_filter(project.config_path, view.model, view.dataset, result, where)
    except SliceError as exc:
        with st.container(horizontal=True, vertical_alignment="center"):
            st.warning(
                f"**The slice in the link is not applied:** {exc}", icon=":material/filter_alt_off:"
            )
            st.button("Clear the slice", key="slice:clear-bad", on_click=apply_slice, args=("",))
        return None
    assert flt is not None
    _chips(flt, len(result.index))
    return flt


def _chips(flt: SliceFilter, total: int) -> None:
    with st.container(horizontal=True, vertical_alignment="center", key="slice-bar"):
        st.markdown(":material/filter_alt: **Slice**")
        for i, condition in enumerate(flt.slice.conditions):
            rest = flt.slice.without(condition.column)
            st.button(
                condition.label(),
                key=f"slice:chip:{i}",
                icon=":material/close:",
                help=f"Remove {condition.label()} from the slice",
                on_click=apply_slice,
                args=(rest.to_param() if rest is not None else "",),
            )
        st.caption(f"{flt.images:,} of {total:,} images")
