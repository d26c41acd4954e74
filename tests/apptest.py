"""Helpers for driving dashboard pages with Streamlit's AppTest (no browser), as a URL would."""

from __future__ import annotations

import html
import re
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from tests.projects import ROOT

APP = str(ROOT / "dashboard" / "app.py")  # the entry point: navigation, the default page
VIEWS = ROOT / "dashboard" / "views"  # one page a file, run on its own: str(VIEWS / "map.py")


def run(script: str, config: Path, monkeypatch: pytest.MonkeyPatch, /, **params: str) -> AppTest:
    """Run ``script`` (``APP`` or a page of ``VIEWS``) for the project ``config`` with the query
    parameters ``params``, once; the AppTest to inspect and run again."""
    monkeypatch.setenv("CAM_DASHBOARD_CONFIG", str(config))
    at = AppTest.from_file(script, default_timeout=120)
    for name, value in params.items():
        at.query_params[name] = value
    return at.run()


def card_paths(at: AppTest) -> list[str]:
    """File names of the gallery cards, in order (a page's cards are one ``st.html``)."""
    return [
        html.unescape(name)
        for h in at.html
        for name in re.findall(r'class="cam-card".*?<strong>(.*?)</strong>', h.value)
    ]
