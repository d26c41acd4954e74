"""Export for relabelling: images as Label Studio tasks (with the model's class as a
pre-annotation), the matching labelling config, or a CSV to edit (:mod:`core.labelstudio`).

Files are made when a download is clicked, not on every rerun. Images are addressed as Label
Studio local files (the dataset root's absolute path under a document root of ``/``, as
``python -m core export-labels`` does by default) unless a URL prefix is typed.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from functools import partial

import streamlit as st

from core import Results
from core.labelstudio import image_url, labelling_config, tasks_csv, tasks_for
from dashboard.state import resources
from dashboard.state.view_state import ViewState

__all__ = ["known_paths", "relabel_export"]


def known_paths(result: Results, paths: Sequence[str]) -> list[str]:
    """``paths`` that the result's manifest holds, in order (an export names no other)."""
    from core.corrections import manifest_rows

    found = manifest_rows(result, list(paths))
    return [p for p, row in zip(paths, found, strict=True) if row >= 0]


def relabel_export(
    config_path: str,
    view: ViewState,
    result: Results,
    paths: Callable[[], Sequence[str]],
    stem: str,
    key: str,
    count: int | None = None,
) -> None:
    """An "Export for relabelling" popover: Label Studio tasks (JSON), its labelling config
    (XML) and a CSV of the images ``paths()`` gives (called when a download is clicked)."""
    spec = resources.project(config_path).dataset(view.dataset)
    root = "" if spec.parquet or spec.arrow is not None else str(spec.root.resolve())
    label = "Export for relabelling" + (f" ({count:,})" if count is not None else "")
    with st.popover(label, icon=":material/label:"):
        st.caption(
            "Label Studio tasks with the given label and the model's class as a pre-annotation, "
            "and the labelling config to paste into the project's settings. Import the "
            "corrected export with `python -m core import-labels`."
        )
        prefix = st.text_input(
            "Images served at (URL prefix; empty: Label Studio local files)",
            key=f"{key}:image-root",
            placeholder="https://images.example.com/dataset",
        ).strip()
        if not prefix and not root:
            st.caption("This dataset's images are not files: give the URL they are served at.")
        make = partial(_tasks, result, paths, view.model, prefix or None, root)
        st.download_button(
            "Label Studio tasks (JSON)",
            partial(_json, make),
            file_name=f"{stem}.json",
            mime="application/json",
            key=f"{key}:json",
            icon=":material/download:",
            on_click="ignore",
        )
        st.download_button(
            "Labelling config (XML)",
            labelling_config(result.classes),
            file_name=f"{stem}.config.xml",
            mime="application/xml",
            key=f"{key}:xml",
            icon=":material/download:",
            on_click="ignore",
        )
        st.download_button(
            "CSV (path, label, predicted)",
            partial(_csv, make),
            file_name=f"{stem}.csv",
            mime="text/csv",
            key=f"{key}:csv",
            icon=":material/download:",
            on_click="ignore",
        )


def _tasks(
    result: Results,
    paths: Callable[[], Sequence[str]],
    model: str,
    prefix: str | None,
    root: str,
) -> list[dict[str, object]]:
    def url(path: str) -> str:
        return image_url(path, prefix, None if prefix else root)

    return tasks_for(result, known_paths(result, paths()), model, url)


def _json(make: Callable[[], list[dict[str, object]]]) -> bytes:
    return json.dumps(make(), ensure_ascii=False, indent=1).encode("utf-8")


def _csv(make: Callable[[], list[dict[str, object]]]) -> bytes:
    return tasks_csv(make()).encode("utf-8")
