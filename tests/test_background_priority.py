"""Background work (label quality, patterns, layouts, the warm-up) yields the cores to page runs:
its threads run at a lower priority than the page's; the caller's own priority is untouched."""

from __future__ import annotations

import os
import sys
import threading

import pytest

from dashboard.state import resources

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="a thread's own nice value is Linux's"
)


def _niceness() -> int:
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


def test_background_threads_run_below_the_page() -> None:
    page = _niceness()
    seen: dict[str, int] = {}

    def probe(key: str) -> None:
        seen[key] = _niceness()

    resources.background_thread("probe-low", lambda: probe("low")).join(10)
    resources.background_thread("probe-page", lambda: probe("page"), low_priority=False).join(10)
    future = resources.in_background("probe-future", _niceness)
    at_page = resources.in_background("probe-page-future", _niceness, low_priority=False)

    lowered = min(19, page + resources.BACKGROUND_NICENESS)
    assert lowered > page or page == 19  # the machine's nice values allow a lower priority
    assert seen == {"low": lowered, "page": page}
    assert future.result(10) == lowered
    assert at_page.result(10) == page
    assert _niceness() == page  # only the background thread changed
