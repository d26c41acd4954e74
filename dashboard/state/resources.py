"""Server-wide cached objects: loaded once per server process, shared by every session.

Models, datasets, results, metrics, layer lists and the stores of CAM maps, panels and badge
scores live in ``st.cache_resource`` (never mutated by callers; the stores are thread-safe caches
by design), so a large result is never copied per rerun. Every function takes the config path,
so two configs never mix.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from contextlib import suppress
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, TypeVar

import numpy as np
import pandas as pd
import streamlit as st

from core.analysis.gallery import (
    first_pages,
    stored_size,
    uses_stored_maps,
    warm_pages,
    warm_stored_pages,
)
from core.analysis.metrics import confusion_matrix, per_class_metrics, top_confused_pairs
from core.config import ModelSpec, ProjectConfig, load_config
from core.data.datasets import ImageDataset, open_dataset
from core.notes import NotesStore
from core.results import Results
from core.results.evaluate import EvaluationJob, check_classes, lookup
from dashboard.state.view_state import SORTS, ViewState

if TYPE_CHECKING:  # torch and the model load on first use: stored results need neither
    from core.analysis.badges import BadgeWorker, ScoreCache
    from core.analysis.panels import PanelCache
    from core.data.models import LoadedModel
    from core.explain.cam import LayerInfo
    from core.explain.map_cache import MapCache

__all__ = [
    "BACKGROUND_NICENESS",
    "WARM_UP_IMAGES",
    "ModelReady",
    "background_thread",
    "badge_worker",
    "class_metrics",
    "confused_pairs",
    "dataset",
    "evaluation",
    "evaluation_job",
    "in_background",
    "layers",
    "map_cache",
    "matrix",
    "model",
    "model_loading",
    "model_ready",
    "notes_store",
    "panel_cache",
    "project",
    "score_cache",
    "warm_up",
    "weights_stamp",
]

T = TypeVar("T")


#: The nice value of background work (the model's load, the warm-up, layouts, label quality and
#: patterns where no page waits for them): on a busy machine it yields the cores to page runs
#: and to a browser on the same machine (bench/embeddings.py --part browser, bench/click.py).
BACKGROUND_NICENESS = 10


def background_thread(
    name: str, work: Callable[[], object], low_priority: bool = True
) -> threading.Thread:
    """Start ``work()`` on a daemon thread, at :data:`BACKGROUND_NICENESS` unless
    ``low_priority`` is False (on Linux a thread has a nice value of its own; elsewhere this
    is a plain thread)."""

    def run() -> None:
        if low_priority:
            with suppress(AttributeError, OSError):  # no per-thread priority here
                os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), BACKGROUND_NICENESS)
        work()

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    return thread


def in_background(
    name: str, compute: Callable[[], T], delay: float = 0.0, low_priority: bool = True
) -> Future[T]:
    """``compute()`` on a daemon thread of its own (see :func:`background_thread`), ``delay``
    seconds from now; its value, or its exception, in the future (handed to whoever waits: a
    message on a page, never a thread's traceback)."""
    future: Future[T] = Future()

    def run() -> None:
        time.sleep(delay)
        future.set_running_or_notify_cancel()
        try:
            future.set_result(compute())
        except BaseException as exc:
            future.set_exception(exc)

    background_thread(name, run, low_priority)
    return future


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


def model_loading(config_path: str, name: str, start_in: float = 0.0) -> Future[ModelReady]:
    """The model and its layers, loading on a background thread from the first call on
    (``start_in`` seconds later, if that first call says so).

    A page starts it and does not wait: stored results are drawn without torch, and by the
    time someone clicks a cell the model (torch's import most of all) is loaded or on its way.
    Shared by all sessions (thread-safe for inference and CAMs); loaded again when its
    checkpoint file changes (e.g. copied over while the server runs).
    """
    return _model_loading(config_path, name, weights_stamp(config_path, name), start_in)


@st.cache_resource(show_spinner=False, max_entries=16)
def _model_loading(
    config_path: str, name: str, stamp: tuple[object, ...], _start_in: float = 0.0
) -> Future[ModelReady]:
    spec = project(config_path).model(name)
    return in_background(f"load-model {name}", partial(_load, spec), _start_in)


def model_ready(config_path: str, name: str) -> bool:
    """Whether the model has finished loading (or failed to: waiting then raises at once)."""
    return model_loading(config_path, name).done()


def _ready(config_path: str, name: str) -> ModelReady:
    stamp = weights_stamp(config_path, name)
    future = _model_loading(config_path, name, stamp)
    try:
        return future.result()
    except Exception:
        _model_loading.clear(config_path, name, stamp)  # e.g. a checkpoint being copied: retry
        raise


def model(config_path: str, name: str) -> LoadedModel:
    """The loaded model, waiting for its background load if needed."""
    return _ready(config_path, name).loaded


def weights_stamp(config_path: str, name: str) -> tuple[object, ...]:
    """Size, time and identity of a model entry's checkpoint files (a stat each): what changes
    when a checkpoint is replaced or copied over, so that caches of the old one are left."""
    spec = project(config_path).model(name)
    stamp: list[object] = []
    for path in (spec.weights, spec.module):
        try:
            found = path.stat() if path is not None else None
        except OSError as exc:
            stamp.append(str(exc))
            continue
        if found is not None:
            stamp.append((found.st_ino, found.st_size, found.st_mtime_ns))
    return tuple(stamp)


@st.cache_resource(show_spinner="Listing images…")
def dataset(config_path: str, name: str, model_name: str) -> ImageDataset:
    """A dataset's file list, with the class order the model's config fixes."""
    config = project(config_path)
    return open_dataset(config.dataset(name), config.model(model_name).classes)


def evaluation_job(config_path: str, model_name: str, dataset_name: str) -> EvaluationJob:
    """The (possibly still running) evaluation; one per server, whoever asked first.

    Stored results of unchanged inputs are opened without loading the model (nor importing
    torch), so a fresh server draws its first page from them at once. A finished one whose
    files changed on disk (the result folder deleted or replaced) or whose checkpoint changed
    is left: the next call reopens or recomputes it.
    """
    stamp = weights_stamp(config_path, model_name)
    job = _evaluation_job(config_path, model_name, dataset_name, stamp)
    if job.finished and _changed_on_disk(job):
        _evaluation_job.clear(config_path, model_name, dataset_name, stamp)
        _evaluation.clear(config_path, model_name, dataset_name, stamp)
        job = _evaluation_job(config_path, model_name, dataset_name, stamp)
    return job


def _changed_on_disk(job: EvaluationJob) -> bool:
    try:
        return job.result(0).changed_on_disk()
    except Exception:  # a failed job is not kept anyway (see evaluation)
        return False


@st.cache_resource(show_spinner=False, max_entries=32)
def _evaluation_job(
    config_path: str, model_name: str, dataset_name: str, stamp: tuple[object, ...]
) -> EvaluationJob:
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


def evaluation(config_path: str, model_name: str, dataset_name: str) -> Results:
    """The memory-mapped results, one object shared by every session (never copied per rerun:
    ``st.cache_data`` would pickle it on every call); waits for the job. A failure (a full or
    read-only disk, a bad checkpoint) is not kept: the next call tries again."""
    evaluation_job(config_path, model_name, dataset_name)  # leaves one changed on disk
    stamp = weights_stamp(config_path, model_name)
    return _evaluation(config_path, model_name, dataset_name, stamp)


@st.cache_resource(show_spinner=False, max_entries=32)
def _evaluation(
    config_path: str, model_name: str, dataset_name: str, stamp: tuple[object, ...]
) -> Results:
    job = _evaluation_job(config_path, model_name, dataset_name, stamp)
    try:
        return job.result()
    except Exception:
        _evaluation_job.clear(config_path, model_name, dataset_name, stamp)  # let a rerun retry
        raise


def matrix(config_path: str, model_name: str, dataset_name: str) -> np.ndarray:
    """Confusion-matrix counts [true, pred]."""
    result = evaluation(config_path, model_name, dataset_name)
    return _matrix(result.fingerprint, result)


@st.cache_resource(show_spinner=False, max_entries=64)
def _matrix(fingerprint: str, _result: Results) -> np.ndarray:  # the fingerprint stands for it
    return confusion_matrix(_result.predictions, _result.num_classes)


def class_metrics(config_path: str, model_name: str, dataset_name: str) -> pd.DataFrame:
    """Per-class precision, recall, F1 and support."""
    result = evaluation(config_path, model_name, dataset_name)
    return _class_metrics(result.fingerprint, result)


@st.cache_resource(show_spinner=False, max_entries=64)
def _class_metrics(fingerprint: str, _result: Results) -> pd.DataFrame:
    return per_class_metrics(_result.predictions, _result.classes)


def confused_pairs(config_path: str, model_name: str, dataset_name: str, k: int) -> pd.DataFrame:
    """The ``k`` most confused (true, predicted) pairs."""
    result = evaluation(config_path, model_name, dataset_name)
    return _confused_pairs(result.fingerprint, k, result)


@st.cache_resource(show_spinner=False, max_entries=64)
def _confused_pairs(fingerprint: str, k: int, _result: Results) -> pd.DataFrame:
    return top_confused_pairs(_result.predictions, _result.classes, k)


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
def score_cache() -> ScoreCache:
    """The server-wide store of map faithfulness scores (the gallery's badges)."""
    from core.analysis.badges import ScoreCache

    return ScoreCache()


@st.cache_resource(show_spinner=False)
def badge_worker() -> BadgeWorker:
    """The one background thread that scores gallery pages."""
    from core.analysis.badges import BadgeWorker

    return BadgeWorker()


@st.cache_resource(show_spinner=False)
def notes_store(config_path: str, read_only: bool) -> NotesStore:
    """The team's tags and notes (SQLite beside the cache, or the config's ``notes_db``)."""
    config = project(config_path)
    return NotesStore(config.notes_db, read_only=read_only, default_tags=config.tags)


@st.cache_resource(show_spinner=False, max_entries=32)
def warm_up(
    config_path: str, model_name: str, dataset_name: str, fingerprint: str
) -> threading.Thread:
    """Once per server and evaluation (``fingerprint``: changed weights or images warm again):
    a background thread that computes and encodes page 1 of the cells in the default view,
    errors first, so first clicks are as quick as later ones. Maps the evaluation stored are
    encoded at once; others wait for the model's background load. A model that fails to load
    or has no layer to map warms nothing (the page says why when a cell is opened).
    """
    default = ViewState()
    column, ascending, _ = SORTS[default.sort]
    result = evaluation(config_path, model_name, dataset_name)
    data = dataset(config_path, dataset_name, model_name)
    maps, panels = map_cache(), panel_cache()
    size = stored_size(result) if uses_stored_maps(result, default.method, None) else None
    loading = model_loading(config_path, model_name) if size is None else None

    def warm() -> None:  # choosing the pages is work too: all of it off the page's first run
        pages = first_pages(
            result.predictions, column, ascending, default.page_size, WARM_UP_IMAGES
        )
        if size is not None:  # stored: no model, so no wait for torch's import
            warm_stored_pages(result, data, pages, size, panels, default.opacity)
            return
        assert loading is not None
        try:
            ready = loading.result()
        except Exception:  # the page that asks for the model shows why it did not load
            return
        if ready.default_layer is None:
            return
        warm_pages(
            ready.loaded,
            data,
            pages,
            default.method,
            ready.default_layer,
            maps,
            panels,
            fingerprint,
            default.opacity,
            result,
        )

    return background_thread("warm-up", warm)
