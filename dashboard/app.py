"""Entry point: ``streamlit run dashboard/app.py [-- --config path/to/config.toml]``."""

from __future__ import annotations

import sys
from contextlib import nullcontext
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `streamlit run` puts only dashboard/ on the path
    sys.path.insert(0, str(ROOT))

import streamlit as st  # noqa: E402

from dashboard.parts.plotly_early import plotly_loading  # noqa: E402
from dashboard.state.settings import settings  # noqa: E402

st.set_page_config(
    page_title="CAM error analysis", page_icon=":material/troubleshoot:", layout="wide"
)
if settings().login and not st.user.get("is_logged_in", False):  # every page, deep links too
    st.title("CAM error analysis")
    st.button("Log in", on_click=st.login, type="primary")
    st.stop()
# The pages live in dashboard/views/, not pages/: Streamlit would take a pages/ folder beside
# the entry point for its own multipage app on a fresh server's first request.
pages = [
    st.Page(ROOT / "dashboard" / "views" / "analysis.py", title="Error analysis", default=True),
    st.Page(
        ROOT / "dashboard" / "views" / "labels.py",
        title="Suspected label errors",
        url_path="label-errors",
    ),
    st.Page(
        ROOT / "dashboard" / "views" / "compare.py",
        title="Compare models",
        url_path="compare-models",
    ),
    st.Page(ROOT / "dashboard" / "views" / "slices.py", title="Slices", url_path="slices"),
    st.Page(ROOT / "dashboard" / "views" / "patterns.py", title="Patterns", url_path="patterns"),
    st.Page(ROOT / "dashboard" / "views" / "map.py", title="Map", url_path="map"),
    st.Page(ROOT / "dashboard" / "views" / "notes.py", title="Tags & notes", url_path="notes"),
    st.Page(ROOT / "dashboard" / "views" / "findings.py", title="Findings", url_path="findings"),
]
#: Pages whose main view is one large Plotly chart: the browser loads Plotly while the server
#: opens the results (bench/embeddings.py --part browser).
PLOTLY_FIRST = {"map"}
page = st.navigation(pages)
with plotly_loading() if page.url_path in PLOTLY_FIRST else nullcontext():
    page.run()
