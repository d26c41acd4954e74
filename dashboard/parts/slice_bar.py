"""The slice bar: the slice every page is restricted to, as removable chips at the top.

The slice lives in the URL (``where=site:B;brightness:0.1..0.3``), so a copied link opens the
same slice. The session remembers it too, so that moving to another page from the sidebar
(which starts that page with a fresh URL) keeps it; removing the last chip forgets it.
"""

from __future__ import annotations

from functools import partial

import streamlit as st

from core import Results
from core.analysis.slices import SliceError
from core.data.datasets import dataset_key
from core.notes import NotesError
from core.saved_slices import SavedSlices
from dashboard.parts.findings import pin_button, slice_pin
from dashboard.parts.notes import author
from dashboard.parts.page import ProjectView
from dashboard.state import resources, slicing
from dashboard.state.settings import settings
from dashboard.state.slicing import SliceFilter
from dashboard.state.url import set_params

__all__ = ["apply_slice", "saved_slices", "slice_bar"]

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
    _chips(flt, len(result.index), project, result)
    return flt


def saved_slices(project: ProjectView) -> SavedSlices:
    """The named slices of the server's notes database."""
    return SavedSlices(resources.notes_store(project.config_path, settings().read_only))


def _save_box(project: ProjectView, flt: SliceFilter) -> None:
    """A popover that saves the slice under a name everyone on the server sees."""
    store = saved_slices(project)
    with st.popover("Save slice", icon=":material/bookmark_add:"):
        if store.read_only:
            st.caption("This server is read-only: slices cannot be saved.")
            return
        name = st.text_input("Name", key="slice:save-name", max_chars=100)
        writer = author()
        if not writer:
            st.caption("Type your name in the sidebar first: saved slices record their author.")
        if st.button("Save", key="slice:save", disabled=not (writer and name.strip())):
            key = dataset_key(project.config.dataset(project.view.dataset))
            try:
                store.save(key, name, flt.param, writer)
            except NotesError as exc:
                st.error(f"Not saved: {exc}")
            else:
                st.success(f"Saved as “{name.strip()}” for everyone on this server.")


def _chips(flt: SliceFilter, total: int, project: ProjectView, result: Results) -> None:
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
        _save_box(project, flt)
        pin = partial(slice_pin, project, result, flt)
        pin_button(pin, config_path=project.config_path, view=project.view, key="pin:slice")
