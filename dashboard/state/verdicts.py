"""The causal tests the dashboard runs (**Test this pattern**), one per subject, server-wide.

A registry in ``st.cache_resource`` keyed by (config, model, dataset, the evaluation's
fingerprint, the subject's key, targets, seed) holds one :class:`VerdictRun` per subject,
started by whoever asked first; every session that shows the subject polls the same run. A run
waits for the model's background load, tests the subject on a thread of its own
(:func:`core.analysis.causal.result_verdict`: forward passes only, stored beside the result, so
a stored verdict is read, not tested again) and then makes its example images with the
``render`` function the page passes in (Grad-CAM hooks act only in their own thread). A failed
run keeps its error for whoever looks, until someone asks to try again.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future
from contextlib import suppress
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING

import streamlit as st

from core.analysis.causal import DEFAULT_TARGETS, Subject, Verdict, result_verdict, stored_verdict
from core.errors import UserFacingError, reason_of
from dashboard.state import resources

if TYPE_CHECKING:
    from core.data.datasets import ImageDataset
    from core.data.models import LoadedModel
    from core.results import Results

__all__ = ["KEEP_RUNS", "SEED", "Progress", "Tested", "VerdictRun", "verdict_run"]

SEED = 0  # the dashboard tests with core's defaults: 200 targets at most, seed 0
KEEP_RUNS = 64  # finished runs kept (with their example images); the oldest go first

#: Makes the HTML of a verdict's example images: (model, dataset, result, verdict) -> HTML.
Render = Callable[["LoadedModel", "ImageDataset", "Results", Verdict], str]
Key = tuple[str, str, str, str, str, int, int]


class Progress:
    """Where a run is: ``stage`` ("model", "testing", "examples") and forward passes done of
    ``total``. Written by the run's thread, read by every poll (plain attribute reads)."""

    def __init__(self) -> None:
        self.stage = "model"
        self.done = 0
        self.total = 0

    def update(self, done: int, total: int) -> None:
        self.stage, self.done, self.total = "testing", done, total


@dataclass(frozen=True)
class Tested:
    """A finished run: the verdict and its example images as HTML ("" with ``problem`` saying
    why there are none)."""

    verdict: Verdict
    examples: str
    problem: str = ""


@dataclass(frozen=True)
class VerdictRun:
    """One subject's test: its progress and the future :class:`Tested` (or the error)."""

    progress: Progress
    future: Future[Tested]

    @property
    def failed(self) -> bool:
        return self.future.done() and self.future.exception() is not None


class _Runs:
    """Runs by key, under a lock; finished ones beyond :data:`KEEP_RUNS` are dropped."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.runs: OrderedDict[Key, VerdictRun] = OrderedDict()

    def put(self, key: Key, run: VerdictRun) -> None:
        self.runs[key] = run
        self.runs.move_to_end(key)
        finished = [k for k, r in self.runs.items() if r.future.done() and k != key]
        for old in finished[: max(0, len(self.runs) - KEEP_RUNS)]:
            del self.runs[old]


@st.cache_resource(show_spinner=False)
def _registry() -> _Runs:
    return _Runs()


def verdict_run(
    config_path: str,
    model_name: str,
    dataset_name: str,
    result: Results,
    subject: Subject,
    render: Render,
    retry: bool = False,
) -> VerdictRun:
    """The run of ``subject``'s test, started on a thread of its own if nobody has asked for it
    yet (or, with ``retry``, if the last one failed). Never waits."""
    key: Key = (
        config_path,
        model_name,
        dataset_name,
        result.fingerprint,
        subject.key,
        DEFAULT_TARGETS,
        SEED,
    )
    registry = _registry()
    with registry.lock:
        found = registry.runs.get(key)
        if found is not None and not (retry and found.failed):
            return found
    loading = _model_loading(config_path, model_name)
    data = resources.dataset(config_path, dataset_name, model_name)
    with registry.lock:  # another session may have started it meanwhile
        found = registry.runs.get(key)
        if found is not None and not (retry and found.failed):
            return found
        progress = Progress()
        work = partial(_test, progress, loading, data, result, subject, render)
        run = VerdictRun(
            progress,
            resources.in_background(
                f"verdict {subject.key}",
                work,
                low_priority=False,  # a person waits for it
            ),
        )
        registry.put(key, run)
        return run


def _model_loading(config_path: str, name: str) -> Future[resources.ModelReady]:
    """The model's background load; a load that failed is forgotten and started again."""
    loading = resources.model_loading(config_path, name)
    if loading.done() and loading.exception() is not None:
        with suppress(Exception):
            resources.model(config_path, name)  # raises at once, and forgets the failed load
        loading = resources.model_loading(config_path, name)
    return loading


def _test(
    progress: Progress,
    loading: Future[resources.ModelReady],
    data: ImageDataset,
    result: Results,
    subject: Subject,
    render: Render,
) -> Tested:
    """On the run's thread: the stored verdict or a new one, then its example images."""
    stored = stored_verdict(result, subject, DEFAULT_TARGETS, SEED)
    try:
        loaded = loading.result().loaded
    except Exception as exc:
        if stored is None:
            raise UserFacingError(f"the model could not be loaded: {reason_of(exc)}") from exc
        return Tested(stored, "", f"The model could not be loaded: {reason_of(exc)}")
    verdict = stored or result_verdict(
        result, loaded, data, subject, DEFAULT_TARGETS, SEED, progress.update
    )
    progress.stage = "examples"
    try:
        return Tested(verdict, render(loaded, data, result, verdict))
    except Exception as exc:  # e.g. an image changed since: the numbers stand without them
        return Tested(verdict, "", reason_of(exc))
