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


def test_each_subject_is_a_fragment_of_its_own() -> None:
    """A fragment's id comes from its function's qualified name (and its place in the page):
    the poll of each subject gets a name of its own, and still draws what ``draw`` draws."""
    from dashboard.state.polling import of_subject

    drawn: list[str] = []

    def poll(text: str) -> None:
        drawn.append(text)

    first, second, again = of_subject(poll, "a1"), of_subject(poll, "b2"), of_subject(poll, "a1")
    assert first.__qualname__ != second.__qualname__
    assert first.__qualname__ == again.__qualname__  # the same subject: the same fragment
    first("x")
    second("y")
    assert drawn == ["x", "y"]


def _until_done_app() -> None:
    import streamlit as st

    from dashboard.state.polling import until_done

    def part(label: str) -> bool:
        done = st.session_state.get("done", False)
        st.caption(f"{label}: {'done' if done else 'working'}")
        return done

    pending = st.session_state.get("pending", not st.session_state.get("done", False))
    until_done(part, 60, pending=pending)("part")


def test_a_part_polls_until_done_and_keeps_its_place() -> None:
    """``until_done``: the part is drawn while the work runs and once it is done (a run that
    finds it done stops its timer instead of rerunning the page: no rerun loop)."""
    at = AppTest.from_function(_until_done_app).run()
    assert not at.exception
    assert [c.value for c in at.caption] == ["part: working"]
    at.session_state["done"] = True
    at.run()
    assert not at.exception
    assert [c.value for c in at.caption] == ["part: done"]
    at.session_state["pending"] = True  # found done by the part's own run: its timer stops
    at.run()
    assert not at.exception
    assert [c.value for c in at.caption] == ["part: done"]
