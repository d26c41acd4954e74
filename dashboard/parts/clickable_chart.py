"""A Plotly chart whose points are clicked: the click hands a point's ``customdata`` over."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import streamlit as st

__all__ = ["clickable_chart"]


def clickable_chart(figure: Any, key: str, on_data: Callable[[Any], bool]) -> None:
    """Draw ``figure`` (no mode bar); a click calls ``on_data`` with the ``customdata`` of each
    selected point in turn until it returns True (it takes the data it understands)."""
    st.plotly_chart(
        figure,
        key=key,
        on_select=partial(_on_select, key, on_data),
        selection_mode="points",
        config={"displayModeBar": False},
    )


def _on_select(key: str, on_data: Callable[[Any], bool]) -> None:
    for point in st.session_state[key].selection.get("points") or []:
        data = point.get("customdata")
        if data is not None and on_data(data):
            return
