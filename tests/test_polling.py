"""``dashboard.state.polling``: a poll that ends by stopping its own timer, or says it cannot."""

from __future__ import annotations

from streamlit.testing.v1 import AppTest

from dashboard.state.polling import stop_this_poll


def test_outside_a_fragment_nothing_is_sent_and_the_caller_is_told() -> None:
    assert stop_this_poll() is False  # no script run here: the caller falls back to a rerun


def _app() -> None:
    import streamlit as st

    from dashboard.state.polling import stop_this_poll

    st.caption(f"page: {stop_this_poll()}")  # the page's own run is no fragment

    @st.fragment(run_every=60)
    def poll() -> None:
        st.caption(f"fragment: {stop_this_poll()}")

    poll()


def test_inside_a_fragment_its_timer_is_stopped() -> None:
    at = AppTest.from_function(_app).run()
    assert not at.exception
    assert [c.value for c in at.caption] == ["page: False", "fragment: True"]
