"""The Map page's server-wide data: layouts (PCA now, UMAP in the background) and the figure.

Everything is keyed by the evaluation's fingerprint and kept in ``st.cache_resource`` (shared,
never copied per rerun). The UMAP pass runs once per server and evaluation on a thread of its
own; the page shows the PCA layout until it is done and never waits for it.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future
from dataclasses import dataclass, field

import numpy as np
import streamlit as st

from core.analysis.embedding_map import (
    MapLayout,
    density,
    drawn_sample,
    quick_layout,
    result_layout,
    stored_layout,
)
from dashboard import resources


@dataclass
class LayoutJob:
    """The UMAP pass of one evaluation: its future and where it is."""

    future: Future[MapLayout] = field(default_factory=Future)
    stage: str = "starting"
    fraction: float = 0.0

    def progress(self, stage: str, fraction: float) -> None:
        self.stage, self.fraction = stage, fraction


@st.cache_resource(show_spinner=False, max_entries=16)
def layout_job(config_path: str, model: str, dataset: str, fingerprint: str) -> LayoutJob:
    """Start (once per server and evaluation) the UMAP layout on a background thread."""
    result = resources.evaluation(config_path, model, dataset)
    job = LayoutJob()
    stored = stored_layout(result)
    if stored is not None:
        job.future.set_result(stored)
        return job

    def run() -> None:
        try:
            job.future.set_result(result_layout(result, job.progress))
        except BaseException as exc:  # shown on the page; a rerun after clearing retries
            job.future.set_exception(exc)

    threading.Thread(target=run, name="embedding-map", daemon=True).start()
    return job


@st.cache_resource(show_spinner=False, max_entries=16)
def pca(config_path: str, model: str, dataset: str, fingerprint: str) -> MapLayout:
    """The PCA layout shown until the UMAP one is ready."""
    return quick_layout(resources.evaluation(config_path, model, dataset))


def layout(config_path: str, model: str, dataset: str, fingerprint: str) -> tuple[MapLayout, str]:
    """The best layout there is now, and a note on it ("" once UMAP is shown)."""
    job = layout_job(config_path, model, dataset, fingerprint)
    if job.future.done():
        error = job.future.exception()
        if error is None:
            return job.future.result(), ""
        layout_job.clear(config_path, model, dataset, fingerprint)
        note = f"The UMAP layout failed ({error}); the PCA layout is shown."
        return pca(config_path, model, dataset, fingerprint), note
    note = f"Computing the UMAP layout ({job.stage}, {job.fraction:.0%}); PCA shown meanwhile."
    return pca(config_path, model, dataset, fingerprint), note


@dataclass(frozen=True)
class Drawn:
    """What the figure draws: a sample of positions (all up to the limit) and a density."""

    rows: np.ndarray  # positions into the evaluated rows
    grid: tuple[np.ndarray, np.ndarray, np.ndarray] | None  # density of all points, when sampled


@st.cache_resource(show_spinner=False, max_entries=16)
def drawn(
    config_path: str, model: str, dataset: str, fingerprint: str, method: str, limit: int
) -> Drawn:
    """Positions drawn as points (every error kept past ``limit``) and, past it, a density."""
    result = resources.evaluation(config_path, model, dataset)
    wrong = result.true != result.pred
    rows = drawn_sample(wrong, limit)
    if len(rows) == len(wrong):
        return Drawn(rows, None)
    xy = layout(config_path, model, dataset, fingerprint)[0].xy
    return Drawn(rows, density(xy))
