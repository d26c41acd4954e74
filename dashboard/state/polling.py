"""Polls that end without rerunning the page.

A fragment with ``run_every`` shows the progress of background work (badges being scored,
say). Streamlit offers no public way for such a fragment to end its own timer: the usual
ending is a rerun of the whole page, which does not call the fragment again. A page rerun that
lands while someone clicks can swallow the click, so a finished poll here asks the browser to
stop its timer instead: the message Streamlit itself sends when a parent fragment stops
drawing a polling child (``stop_auto_rerun``). The poll's elements stay as last drawn.
"""

from __future__ import annotations

__all__ = ["DIALOG_OPEN", "stop_this_poll"]

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
