"""Server-wide cached objects: loaded once per server process, shared by every session.

Models, datasets, results, metrics, layer lists and the CAM map store live in
``st.cache_resource`` (never mutated by callers; the map store is a thread-safe cache by design),
so a large result is never copied per rerun. Every function takes the config path, so two
configs never mix.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import streamlit as st

from core.analysis.gallery import first_pages, warm_pages
from core.analysis.metrics import confusion_matrix, per_class_metrics, top_confused_pairs
from core.config import ModelSpec, ProjectConfig, load_config
from core.data.datasets import ImageDataset, open_dataset
from core.notes import NotesStore
from core.results import Results
from core.results.evaluate import EvaluationJob, check_classes, lookup
from dashboard.view_state import SORTS, ViewState

if TYPE_CHECKING:  # torch and the model load on first use: stored results need neither
    from core.analysis.panels import PanelCache
    from core.data.models import LoadedModel
    from core.explain.cam import LayerInfo
    from core.explain.map_cache import MapCache

WARM_UP_IMAGES = 2_000  # first pages of the most-clicked cells, computed before anyone clicks


@st.cache_resource(show_spinner=False)
def project(config_path: str) -> ProjectConfig:
    """The parsed config (errors are not cached: fixing the file and rerunning works)."""
    return load_config(config_path)


@dataclass(frozen=True)
class ModelReady:
    """A loaded model and its map layers: the candidates and the default one (the config's
    ``layer`` or auto-detected; None when the model has no spatial layer, e.g. a flat MLP: only
    saliency applies then)."""

    loaded: LoadedModel
    layers: list[LayerInfo]
    default_layer: str | None


def _load(spec: ModelSpec) -> ModelReady:
    from core.data.models import load_model
    from core.explain.layers import candidate_layers, find_target_layer

    loaded = load_model(spec)
    found = candidate_layers(loaded.module, loaded.input_shape)
    try:
        default = spec.layer or find_target_layer(loaded.module, loaded.input_shape)
    except ValueError:
        default = None
    return ModelReady(loaded, found, default)


@st.cache_resource(show_spinner=False)
def model_loading(config_path: str, name: str) -> Future[ModelReady]:
    """The model and its layers, loading on a background thread from the first call on.

    A page starts it and does not wait: stored results are drawn without torch, and by the
    time someone clicks a cell the model (torch's import most of all) is loaded or on its way.
    Shared by all sessions (thread-safe for inference and CAMs).
    """
    spec = project(config_path).model(name)
    future: Future[ModelReady] = Future()

    def run() -> None:
        future.set_running_or_notify_cancel()
        try:
            future.set_result(_load(spec))
        except BaseException as exc:  # handed to whoever waits, as a message (never raised here)
            future.set_exception(exc)

    threading.Thread(target=run, name=f"load-model {name}", daemon=True).start()
    return future


def model_ready(config_path: str, name: str) -> bool:
    """Whether the model has finished loading (or failed to: waiting then raises at once)."""
    return model_loading(config_path, name).done()


def _ready(config_path: str, name: str) -> ModelReady:
    future = model_loading(config_path, name)
    try:
        return future.result()
    except Exception:
        model_loading.clear(config_path, name)  # e.g. a checkpoint still being copied: retry
        raise


def model(config_path: str, name: str) -> LoadedModel:
    """The loaded model, waiting for its background load if needed."""
    return _ready(config_path, name).loaded


@st.cache_resource(show_spinner="Listing images…")
def dataset(config_path: str, name: str, model_name: str) -> ImageDataset:
    """A dataset's file list, with the class order the model's config fixes."""
    config = project(config_path)
    return open_dataset(config.dataset(name), config.model(model_name).classes)


@st.cache_resource(show_spinner=False, max_entries=32)
def evaluation_job(config_path: str, model_name: str, dataset_name: str) -> EvaluationJob:
    """The (possibly still running) evaluation; one per server, whoever asked first.

    Stored results of unchanged inputs are opened without loading the model (nor importing
    torch), so a fresh server draws its first page from them at once.
    """
    config = project(config_path)
    data = dataset(config_path, dataset_name, model_name)
    try:
        found = lookup(config.model(model_name), data, config.cache_dir)
    except OSError:  # e.g. the weights file is missing: loading the model says so clearly
        found = None
    if found is not None and found.result is not None:
        return EvaluationJob.done_with(found.result)
    loaded = model(config_path, model_name)
    check_classes(loaded, data)  # a mismatch is reported at once, not from the thread
    return EvaluationJob(loaded, data, config.cache_dir, found)


@st.cache_resource(show_spinner=False, max_entries=32)
def evaluation(config_path: str, model_name: str, dataset_name: str) -> Results:
    """The memory-mapped results, one object shared by every session (never copied per rerun:
    ``st.cache_data`` would pickle it on every call); waits for the job."""
    job = evaluation_job(config_path, model_name, dataset_name)
    try:
        return job.result()
    except Exception:
        evaluation_job.clear(config_path, model_name, dataset_name)  # let a rerun retry
        raise


@st.cache_resource(show_spinner=False, max_entries=64)
def matrix(config_path: str, model_name: str, dataset_name: str) -> np.ndarray:
    """Confusion-matrix counts [true, pred]."""
    result = evaluation(config_path, model_name, dataset_name)
    return confusion_matrix(result.predictions, result.num_classes)


@st.cache_resource(show_spinner=False, max_entries=64)
def class_metrics(config_path: str, model_name: str, dataset_name: str) -> pd.DataFrame:
    """Per-class precision, recall, F1 and support."""
    result = evaluation(config_path, model_name, dataset_name)
    return per_class_metrics(result.predictions, result.classes)


@st.cache_resource(show_spinner=False, max_entries=64)
def confused_pairs(config_path: str, model_name: str, dataset_name: str, k: int) -> pd.DataFrame:
    """The ``k`` most confused (true, predicted) pairs."""
    result = evaluation(config_path, model_name, dataset_name)
    return top_confused_pairs(result.predictions, result.classes, k)


def layers(config_path: str, model_name: str) -> tuple[list[LayerInfo], str | None]:
    """Candidate target layers and the default one (see :class:`ModelReady`)."""
    ready = _ready(config_path, model_name)
    return ready.layers, ready.default_layer


@st.cache_resource(show_spinner=False)
def map_cache() -> MapCache:
    """The server-wide store of computed CAM maps."""
    from core.explain.map_cache import MapCache

    return MapCache()


@st.cache_resource(show_spinner=False)
def panel_cache() -> PanelCache:
    """The server-wide store of encoded gallery panels (image and overlays)."""
    from core.analysis.panels import PanelCache

    return PanelCache()


@st.cache_resource(show_spinner=False)
def notes_store(config_path: str, read_only: bool) -> NotesStore:
    """The team's tags and notes (SQLite beside the cache, or the config's ``notes_db``)."""
    config = project(config_path)
    return NotesStore(config.notes_db, read_only=read_only, default_tags=config.tags)


@st.cache_resource(show_spinner=False, max_entries=32)
def warm_up(
    config_path: str, model_name: str, dataset_name: str, fingerprint: str
) -> threading.Thread | None:
    """Once per server and evaluation (``fingerprint``: changed weights or images warm again):
    a background thread that computes and encodes page 1 of the cells in the default view,
    errors first, so first clicks are as quick as later ones. None when the model has no layer
    to map (the gallery says so when a cell is opened).
    """
    layer = layers(config_path, model_name)[1]
    if layer is None:
        return None
    default = ViewState()
    column, ascending, _ = SORTS[default.sort]
    result = evaluation(config_path, model_name, dataset_name)
    loaded, data = model(config_path, model_name), dataset(config_path, dataset_name, model_name)
    maps, panels = map_cache(), panel_cache()

    def warm() -> None:  # choosing the pages is work too: all of it off the page's first run
        pages = first_pages(
            result.predictions, column, ascending, default.page_size, WARM_UP_IMAGES
        )
        warm_pages(
            loaded,
            data,
            pages,
            default.method,
            layer,
            maps,
            panels,
            fingerprint,
            default.opacity,
            result,
        )

    thread = threading.Thread(target=warm, name="warm-up", daemon=True)
    thread.start()
    return thread
