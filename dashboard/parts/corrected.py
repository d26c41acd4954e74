"""Corrected labels on the Error-analysis page: the sidebar's toggle (``labels=corrected`` in
the URL) and the banner that says how many labels the corrections changed."""

from __future__ import annotations

import streamlit as st

from core import Results
from dashboard.state.corrections import CORRECTED, PARAM, Corrected, wanted
from dashboard.state.url import set_params

__all__ = ["TOGGLE", "labels_banner", "labels_toggle"]

TOGGLE = "labels-corrected"  # the toggle's session key


def labels_toggle() -> None:
    """The sidebar's "Use corrected labels" toggle, bound to the URL."""
    st.session_state[TOGGLE] = wanted()
    st.toggle(
        "Use corrected labels",
        key=TOGGLE,
        on_change=_on_toggle,
        help="Labels corrected in a relabelling round (python -m core import-labels) replace "
        "the dataset's in the matrix, the metrics and the galleries; the files are unchanged",
    )


def _on_toggle() -> None:
    if st.session_state[TOGGLE]:
        set_params({PARAM: CORRECTED}, reset=("page",))
    else:
        set_params({}, reset=(PARAM, "page"))


def labels_banner(result: Results, fixed: Corrected | None) -> None:
    """What the corrected labels change (nothing unless the URL asks for them)."""
    if not wanted():
        return
    if fixed is None:
        st.caption(
            "No corrected labels are stored for this dataset: the dataset's labels are shown. "
            "Import a relabelling round with `python -m core import-labels`."
        )
        return
    images = len(result.index)
    ignored = f" ({fixed.labels.ignored:,} not applicable here)" if fixed.labels.ignored else ""
    st.info(
        f"**Corrected labels:** {fixed.changed:,} of {images:,} images have a label other than "
        f"the dataset's, from {fixed.corrections:,} stored corrections{ignored}. The matrix, "
        "the metrics and the galleries use them.",
        icon=":material/published_with_changes:",
    )
