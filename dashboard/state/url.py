"""Widgets whose value lives in the URL, so every view can be shared as a link."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import streamlit as st

__all__ = ["bind", "set_params"]


def set_params(values: Mapping[str, str], reset: Iterable[str] = ()) -> None:
    """Write ``values`` to the query parameters and drop those in ``reset``."""
    for name in reset:
        st.query_params.pop(name, None)
    st.query_params.update(values)


def bind(
    widget: Callable[..., Any],
    label: str,
    param: str,
    value: Any,
    options: list[Any] | None = None,
    reset: Iterable[str] = (),
    **kwargs: Any,
) -> Any:
    """Show ``widget`` at ``value``; a change writes ``param`` (and clears ``reset``) in the URL."""
    key = f"url:{param}"
    if st.session_state.get(key) != value:
        st.session_state[key] = value
    positional = (options,) if options is not None else ()
    return widget(
        label,
        *positional,
        key=key,
        on_change=_store,
        args=(param, key, tuple(reset)),
        **kwargs,
    )


def _store(param: str, key: str, reset: tuple[str, ...]) -> None:
    value = st.session_state[key]
    set_params({param: f"{value:g}" if isinstance(value, float) else str(value)}, reset)
