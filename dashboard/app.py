"""Entry point: ``streamlit run dashboard/app.py [-- --config path/to/config.toml]``."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `streamlit run` puts only dashboard/ on the path
    sys.path.insert(0, str(ROOT))

import streamlit as st  # noqa: E402

st.set_page_config(page_title="CAM error analysis", page_icon="🔍", layout="wide")
pages = [
    st.Page(ROOT / "dashboard" / "pages" / "analysis.py", title="Error analysis", default=True),
    st.Page(
        ROOT / "dashboard" / "pages" / "labels.py",
        title="Suspected label errors",
        url_path="label-errors",
    ),
    st.Page(
        ROOT / "dashboard" / "pages" / "compare.py",
        title="Compare models",
        url_path="compare-models",
    ),
    st.Page(ROOT / "dashboard" / "pages" / "notes.py", title="Tags & notes", url_path="notes"),
]
st.navigation(pages).run()
