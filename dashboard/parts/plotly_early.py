"""Plotly's browser code, loaded while the server still works on the page.

Streamlit's browser app loads Plotly (a 4.7 MB script, about 0.9 s to evaluate on a 2-core
machine) only when the first Plotly chart of a page arrives. A page whose main view is a
Plotly chart sends it last, after opening the results (0.5 s for a 100,000-image set on a fresh
server, whose first visitor also imports the library), so the browser idled, then loaded.
:func:`plotly_loading` sends an empty, hidden chart first, which makes the browser load Plotly
at once, while the server works, and takes it away when the page is drawn
(``bench/embeddings.py --part browser``). A page that stops early (``st.stop()``: nothing can be
sent after it) leaves it there, hidden.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import streamlit as st

__all__ = ["plotly_loading"]

_KEY = "plotly-early"  # its container's key: Streamlit gives it the class st-key-plotly-early


@contextmanager
def plotly_loading() -> Iterator[None]:
    """Run a page with an empty, hidden Plotly chart above it until the page is done."""
    import plotly.graph_objects as go

    slot = st.empty()
    with slot.container(key=_KEY):
        st.html(f"<style>.st-key-{_KEY} {{ display: none; }}</style>")
        st.plotly_chart(go.Figure(), config={"staticPlot": True, "displayModeBar": False})
    try:
        yield
    finally:
        slot.empty()
