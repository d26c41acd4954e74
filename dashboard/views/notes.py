"""Tags & notes: everything the team wrote on a dataset's images, with a CSV export."""

from __future__ import annotations

import io

import pandas as pd
import streamlit as st

from core import UserFacingError
from core.data.datasets import dataset_key
from dashboard.parts.page import error_panel
from dashboard.state import resources
from dashboard.state.settings import settings


def main() -> None:
    server = settings()
    st.title("Tags & notes")
    try:
        config = resources.project(str(server.config))
        store = resources.notes_store(str(server.config), server.read_only)
    except UserFacingError as exc:
        error_panel("Tags and notes are unavailable", exc)
        st.stop()
    names = [d.name for d in config.datasets]
    current = st.query_params.get("dataset")
    name = st.selectbox("Dataset", names, index=names.index(current) if current in names else 0)
    if store.read_only_reason:
        st.info(store.read_only_reason)
    try:
        csv = store.export_csv(dataset_key(config.dataset(name)))
    except UserFacingError as exc:
        error_panel("Tags and notes cannot be read", exc)
        st.stop()
    table = pd.read_csv(io.StringIO(csv), dtype=str, keep_default_na=False)
    table["dataset"] = name
    st.caption(f"{len(table)} tags and notes · stored in `{config.notes_db.name}`")
    st.dataframe(table, hide_index=True, width="stretch")
    st.download_button(
        "Download as CSV",
        table.to_csv(index=False).encode(),
        file_name=f"tags_and_notes_{name}.csv",
        mime="text/csv",
    )


main()
