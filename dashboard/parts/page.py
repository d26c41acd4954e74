"""What every page is built on: the project and the view its URL asks for, the view's
evaluation (or an error panel that says why not), and sections built only while open."""

from __future__ import annotations

from dataclasses import dataclass

import streamlit as st

from core import Results, UserFacingError
from core.config import ProjectConfig
from dashboard.state import resources
from dashboard.state.settings import settings
from dashboard.state.view_state import ViewState, parse_view

__all__ = ["ProjectView", "error_panel", "evaluation_or_stop", "folded", "project_view"]


def error_panel(title: str, exc: BaseException) -> None:
    """A clear, specific message; the rest of the app keeps working."""
    st.error(f"**{title}.** {exc}", icon=":material/error:")


def evaluation_or_stop(config_path: str, view: ViewState) -> Results:
    """The view's evaluation (a spinner while it runs), or its error panel and the page stops."""
    try:
        with st.spinner("Evaluating…"):
            return resources.evaluation(config_path, view.model, view.dataset)
    except UserFacingError as exc:
        error_panel(f"Cannot evaluate {view.model!r} on {view.dataset!r}", exc)
        st.stop()


@dataclass(frozen=True)
class ProjectView:
    """The server's project and the view a page's URL asks for."""

    config_path: str
    config: ProjectConfig
    view: ViewState
    models: list[str]
    datasets: list[str]  # those of the view's model


def project_view() -> ProjectView:
    """Load the project config (or say why it cannot be loaded and stop the page) and read the
    view from the URL; its dataset is one of its model's, else that model's first."""
    config_path = str(settings().config)
    try:
        config = resources.project(config_path)
    except UserFacingError as exc:
        error_panel("The project config could not be loaded", exc)
        st.stop()
    models = [m.name for m in config.models]
    params = st.query_params.to_dict()
    view = parse_view(params, models, [d.name for d in config.datasets])
    datasets = config.datasets_for(view.model)
    return ProjectView(config_path, config, parse_view(params, models, datasets), models, datasets)


def folded(parent, label: str, key: str):  # type: ignore[no-untyped-def]
    """An expander in ``parent`` that is built only while open (opening it reruns): the open
    expander to fill, or None while it is closed."""
    box = parent.expander(label, key=key, on_change="rerun")
    return box if box.open else None
