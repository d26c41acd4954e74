"""Polls that end without rerunning the page.

A fragment with ``run_every`` shows the progress of background work (badges being scored,
say). Streamlit offers no public way for such a fragment to end its own timer: the usual
ending is a rerun of the whole page, which does not call the fragment again. A page rerun that
lands while someone clicks can swallow the click, so a finished poll here asks the browser to
stop its timer instead: the message Streamlit itself sends when a parent fragment stops
drawing a polling child (``stop_auto_rerun``). The poll's elements stay as last drawn.

:func:`until_done` is the whole pattern for a part of a page that shows what background work
adds (the matrix's label-error marks, the Patterns page's cards, the Map's UMAP figure): the part
is a fragment that reruns itself while the work runs and draws what it has, and once a run of it
finds the work done it draws the result and stops its own timer. Nothing else on the page is
sent again, so a click elsewhere, or on the part itself, is never lost to a page rerun.

A poll inside a part that a click redraws (the badges of a gallery page) is a fragment of its
own per subject (:func:`of_subject`). Streamlit starts a new ScriptRunner for a request that
arrives when the session's runner has just finished a run but the server has not sent all of
that run's messages yet, and it drops the rest of them (``AppSession``: "Ignoring event from
non-current ScriptRunner"). A tick of the previous page's poll, on its way while the cell's
run ends, did that and lost the new page's cards (1 click in 287 under 8 users). A tick of a
poll that the new run did not draw again names a fragment Streamlit no longer has: it is
dropped on arrival, before any runner is started.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import ParamSpec

import streamlit as st

__all__ = ["DIALOG_OPEN", "of_subject", "stop_this_poll", "until_done"]

P = ParamSpec("P")

#: Session state: an Inspect dialog was opened since the cell last reran. A page rerun would
#: close it, so the polls then only fill in what they can and leave the page alone.
DIALOG_OPEN = "inspect-dialog-open"


def stop_this_poll() -> bool:
    """Stop the auto-rerun timer of the fragment that is running now, in this session's
    browser. False (nothing sent) outside a fragment, or where this Streamlit cannot: the
    caller then ends the poll the usual way, with a page rerun."""
    try:
        from streamlit.proto.ForwardMsg_pb2 import ForwardMsg
        from streamlit.runtime.scriptrunner_utils.script_run_context import (
            ThreadState,
            get_script_run_ctx,
        )

        fragment_id = ThreadState.get().fragment_id
    except (ImportError, AttributeError, RuntimeError):
        return False
    ctx = get_script_run_ctx()
    if ctx is None or not fragment_id:
        return False
    message = ForwardMsg()
    message.stop_auto_rerun.fragment_ids.append(fragment_id)
    ctx.enqueue(message)
    return True


def of_subject(draw: Callable[P, None], subject: str) -> Callable[P, None]:
    """``draw`` under a name of its own for ``subject`` (a short digest of what it polls):
    a fragment's id comes from its function's name and its place in the page, so this makes
    the poll of each subject a fragment of its own."""

    @wraps(draw)
    def run(*args: P.args, **kwargs: P.kwargs) -> None:
        draw(*args, **kwargs)

    run.__qualname__ = f"{draw.__qualname__}[{subject}]"
    return run


def until_done(draw: Callable[P, bool], every: float, pending: bool) -> Callable[P, None]:
    """``draw`` as a fragment, rerun every ``every`` seconds while ``pending`` (the background
    work it shows is not done when the page or its parent fragment runs). ``draw`` returns
    whether the work is done; the first run that says so (it has drawn the result) stops the
    timer, with no page rerun. Not ``pending``: the same fragment with no timer, so what it draws
    keeps its place in the page, and its widgets their keys, whether or not the work had to be
    waited for. A widget drawn inside reruns only this fragment (a callback can widen that with
    ``st.rerun(<fragment key>)``); ``draw`` reads what may have changed (the URL) itself, since a
    fragment's own rerun keeps the arguments it was called with."""

    @wraps(draw)  # the fragment's id comes from draw's name and its place in the page
    def run(*args: P.args, **kwargs: P.kwargs) -> None:
        done = draw(*args, **kwargs)
        if done and pending and not stop_this_poll() and not st.session_state.get(DIALOG_OPEN):
            st.rerun()  # this Streamlit cannot stop the timer: a page rerun ends the poll

    return st.fragment(run, run_every=every if pending else None)
