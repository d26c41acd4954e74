"""Analyses of an evaluation, computed once per server and shared by every session.

Each is keyed by the evaluation's fingerprint and kept in ``st.cache_resource``. The slow ones run
on a background thread of their own (a future in the cache) and are saved beside the result, so a
page either waits for a small one or draws at once and polls (:mod:`dashboard.state.polling`):
label quality, patterns, per-layer faithfulness, the Map's UMAP layout and the similar-image
search copy. Model comparisons are computed on the page's own run.
"""

from __future__ import annotations

import os
from concurrent.futures import Future, wait
from dataclasses import dataclass, field, replace
from functools import partial
from typing import TYPE_CHECKING

import numpy as np
import streamlit as st

from core import Results, UserFacingError
from core.analysis.embedding_map import MapLayout, quick_layout, result_layout, stored_layout
from core.analysis.label_quality import LabelQuality, result_label_quality
from core.analysis.metrics import confusion_matrix
from core.analysis.patterns import Patterns, result_patterns
from core.analysis.similar import search_vectors
from core.errors import reason_of
from dashboard.state import resources

if TYPE_CHECKING:  # SciPy and scikit-learn load when two models are compared, not before
    from core.analysis.checkpoints import Checkpoints
    from core.analysis.comparison import Comparison, ModelResults
    from core.data.datasets import ImageDataset
    from core.data.models import LoadedModel
    from core.explain.layer_trust import LayerScore

__all__ = [
    "WAIT_FOR_PATTERNS_UP_TO",
    "WAIT_FOR_QUALITY_UP_TO",
    "LayoutJob",
    "arrays",
    "checkpoints",
    "comparison",
    "flagged_matrix",
    "layer_faithfulness",
    "layer_scores",
    "map_layout",
    "map_layout_job",
    "patterns",
    "patterns_or_reason",
    "pca_layout",
    "probabilities",
    "quality",
    "quality_ready",
    "search_copy",
    "start_patterns",
    "stored_faithfulness",
]


def arrays(result: Results) -> ModelResults:
    """The per-image arrays the analyses take (with :func:`probabilities`)."""
    from core.analysis.comparison import ModelResults

    return ModelResults.of(result)


def probabilities(result: Results) -> np.ndarray:
    """The evaluation's probabilities [N, K] (the other half of the adapter)."""
    table = result.predictions
    if not len(table):
        return np.zeros((0, result.num_classes), np.float32)
    return result.probs(result.index)


def _wait_limit(name: str, default: int) -> int:
    """A page's wait limit below, or the number in the environment variable ``name`` (tests set
    0 to see a page that does not wait on a small project)."""
    return int(os.environ.get(name, default))


#: Up to this many probabilities (images × classes) a page that marks suspected label errors
#: waits for them (about a second); past it the page is drawn at once and marked when they are
#: found (1,000,000 × 1,000: 5–20 s, the first time only: they are saved with the results).
WAIT_FOR_QUALITY_UP_TO = _wait_limit("CAM_DASHBOARD_WAIT_FOR_QUALITY_UP_TO", 20_000_000)


@st.cache_resource(show_spinner=False, max_entries=32)
def _quality_pass(
    config_path: str, model_name: str, dataset_name: str, fingerprint: str
) -> Future[LabelQuality]:
    """Label quality of one evaluation, computed once per server on a thread of its own (at the
    page's priority where pages wait for it, below it where they do not)."""
    result = resources.evaluation(config_path, model_name, dataset_name)
    compute = partial(result_label_quality, result)
    return resources.in_background("label-quality", compute, low_priority=not _waits(result))


def _waits(result: Results) -> bool:
    """Whether a page waits for the label quality of ``result`` (see :func:`quality_ready`)."""
    return len(result.index) * result.num_classes <= WAIT_FOR_QUALITY_UP_TO


def quality(config_path: str, model_name: str, dataset_name: str, fingerprint: str) -> LabelQuality:
    """Label quality of one evaluation's rows (shared, read-only; keyed by its fingerprint);
    waits for the pass. A failed pass is not kept: the next call tries again."""
    future = _quality_pass(config_path, model_name, dataset_name, fingerprint)
    try:
        return future.result()
    except BaseException:
        _quality_pass.clear(config_path, model_name, dataset_name, fingerprint)
        raise


def quality_ready(config_path: str, model_name: str, dataset_name: str, fingerprint: str) -> bool:
    """Whether label quality is known (starting its pass if need be). An evaluation of up to
    :data:`WAIT_FOR_QUALITY_UP_TO` probabilities waits for it, so it always is."""
    future = _quality_pass(config_path, model_name, dataset_name, fingerprint)
    result = resources.evaluation(config_path, model_name, dataset_name)
    if _waits(result):
        wait([future])
    return future.done()


@st.cache_resource(show_spinner=False, max_entries=32)
def flagged_matrix(
    config_path: str, model_name: str, dataset_name: str, fingerprint: str
) -> np.ndarray:
    """[true, pred] counts of the images flagged as suspected label errors."""
    result = resources.evaluation(config_path, model_name, dataset_name)
    hit = quality(config_path, model_name, dataset_name, fingerprint).is_issue
    return confusion_matrix(result.predictions[hit], result.num_classes)


@st.cache_resource(show_spinner=False, max_entries=16)
def comparison(
    config_path: str, model_a: str, model_b: str, dataset_name: str, fingerprints: tuple[str, str]
) -> Comparison:
    """A vs B on one dataset; raises UserFacingError for a mismatched pair."""
    from core.analysis.comparison import compare

    a, b = (
        replace(arrays(resources.evaluation(config_path, m, dataset_name)), model=m)
        for m in (model_a, model_b)
    )
    return compare(a, b)


@st.cache_resource(show_spinner=False, max_entries=8)
def checkpoints(
    config_path: str,
    baseline: str,
    candidates: tuple[str, ...],
    dataset_name: str,
    fingerprints: tuple[str, ...],
    named: tuple[tuple[str, str], ...] = (),
    where: str = "",
    _positions: np.ndarray | None = None,
) -> Checkpoints:
    """Each candidate checked against the baseline on one dataset, overall, per class and per
    slice group (``named``: the saved slices as (name, URL form), then every metadata value,
    as ``python -m core check`` tests them) (the Compare page's grid); once per server for
    these evaluations (``fingerprints``: the baseline's, then the candidates') and slices.
    With ``where`` (a slice's URL form; ``_positions`` its mask over the baseline's evaluated
    rows), every group keeps only the slice's images. Candidates that cannot be paired are in
    ``refused``."""
    from core.analysis.checkpoints import check_checkpoints
    from core.analysis.regression import GROUP_KINDS
    from core.analysis.slice_groups import result_slice_groups
    from dashboard.state import slicing

    if where and _positions is not None:
        found = checkpoints(config_path, baseline, candidates, dataset_name, fingerprints, named)
        return found.within(_positions)
    base = resources.evaluation(config_path, baseline, dataset_name)
    results = {m: resources.evaluation(config_path, m, dataset_name) for m in candidates}
    data = resources.dataset(config_path, dataset_name, baseline)
    columns = slicing.columns(config_path, baseline, dataset_name, base)
    groups = result_slice_groups(base, data, named, columns)
    return check_checkpoints(base, results, baseline, GROUP_KINDS, groups.masks)


# ----------------------------------------------------------------------------- patterns

#: Up to this many evaluated images a page waits for the ranking (at a million it takes tens of
#: seconds, the first time only: it is saved with the results).
WAIT_FOR_PATTERNS_UP_TO = _wait_limit("CAM_DASHBOARD_WAIT_FOR_PATTERNS_UP_TO", 200_000)


@st.cache_resource(show_spinner=False, max_entries=32)
def _patterns_pass(
    config_path: str, model: str, dataset: str, fingerprint: str
) -> Future[Patterns]:
    """The ranking of one evaluation, computed once per server on a thread of its own (at the
    page's priority where pages wait for it, below it where they do not)."""
    result = resources.evaluation(config_path, model, dataset)
    waited = len(result.index) <= WAIT_FOR_PATTERNS_UP_TO
    compute = partial(result_patterns, result)
    return resources.in_background("patterns", compute, low_priority=not waited)


def start_patterns(config_path: str, model: str, dataset: str, result: Results) -> None:
    """Start the ranking's pass without waiting (a cell's first click waits for what is left of
    it, on a small result); nothing for a result stored without maps."""
    if result.has_maps:
        _patterns_pass(config_path, model, dataset, result.fingerprint)


def patterns(
    config_path: str, model: str, dataset: str, result: Results, up_to: int | None = None
) -> Patterns | None:
    """The ranked patterns, or None while the pass of a result of more than ``up_to`` images
    (default :data:`WAIT_FOR_PATTERNS_UP_TO`) is still running.

    Raises :class:`~core.errors.UserFacingError` (e.g. a result stored without maps); a failed
    pass is not kept, so the next call tries again.
    """
    key = (config_path, model, dataset, result.fingerprint)
    future = _patterns_pass(*key)
    if len(result.index) <= (WAIT_FOR_PATTERNS_UP_TO if up_to is None else up_to):
        wait([future])
    if not future.done():
        return None
    try:
        return future.result()
    except BaseException:
        _patterns_pass.clear(*key)
        raise


def patterns_or_reason(
    config_path: str, model: str, dataset: str, result: Results, up_to: int | None = None
) -> tuple[Patterns | None, str]:
    """:func:`patterns`, with the reason as text instead of an exception ("" when none)."""
    if not result.has_maps:
        return None, (
            "This evaluation was stored without Grad-CAM maps (--no-maps), so it has no "
            "patterns. Evaluate again with maps to find them."
        )
    try:
        return patterns(config_path, model, dataset, result, up_to), ""
    except UserFacingError as exc:
        return None, str(exc)
    except Exception as exc:  # e.g. a full disk while saving: the page keeps working
        return None, f"Patterns could not be found: {reason_of(exc)}"


# ----------------------------------------------------------------------------- faithfulness


@st.cache_resource(show_spinner=False, max_entries=32)
def _layer_pass(
    config_path: str, model_name: str, dataset_name: str, fingerprint: str, method: str
) -> Future[dict[str, LayerScore]]:
    """Per-layer faithfulness of one evaluation and method, on its own thread, once per
    server; read from (and saved to) the result folder when it can be."""

    result = resources.evaluation(config_path, model_name, dataset_name)
    loaded = resources.model(config_path, model_name)
    data = resources.dataset(config_path, dataset_name, model_name)
    return resources.in_background(
        "layer-faithfulness", lambda: layer_scores(loaded, data, result, method)
    )


def layer_scores(
    model: LoadedModel, dataset: ImageDataset, result: Results, method: str
) -> dict[str, LayerScore]:
    """Per-layer faithfulness: saved beside the result (``derived/layer_faithfulness_<method>``),
    else computed on the fixed sample and saved."""
    from core.analysis.trust import load_layer_scores, sample_layer_faithfulness, save_layer_scores

    found = load_layer_scores(result, method)
    if found is not None:
        return found
    table = result.predictions
    scores = sample_layer_faithfulness(
        model, dataset, list(table["path"]), table["pred"].tolist(), method
    )
    save_layer_scores(result, method, scores)
    return {s.layer: s for s in scores}


def layer_faithfulness(
    config_path: str, model_name: str, dataset_name: str, fingerprint: str, method: str
) -> dict[str, LayerScore] | None:
    """The per-layer scores if known, else None (their pass is started)."""
    future = _layer_pass(config_path, model_name, dataset_name, fingerprint, method)
    if not future.done():
        return None
    try:
        return future.result()
    except Exception:
        return {}


@st.cache_resource(show_spinner=False, max_entries=32)
def stored_faithfulness(
    config_path: str, model_name: str, dataset_name: str, fingerprint: str
) -> np.ndarray | None:
    """The faithfulness scores the evaluation stored (``faithfulness = true``): [N, 2] over the
    evaluated rows' manifest positions, or None."""
    from core.analysis.trust import stored_faithfulness as stored

    found = stored(resources.evaluation(config_path, model_name, dataset_name))
    return None if found is None else np.asarray(found)


# ----------------------------------------------------------------------------- similar images


@st.cache_resource(show_spinner=False, max_entries=8)
def search_copy(
    config_path: str, model: str, dataset: str, fingerprint: str
) -> Future[tuple[np.ndarray, np.ndarray]]:
    """The float32 search copy of a result's embeddings (saved beside it), made once per
    server in the background; queries read the float16 embeddings until it is there."""
    result = resources.evaluation(config_path, model, dataset)
    return resources.in_background("similar-search-copy", partial(search_vectors, result))


# ----------------------------------------------------------------------------- map layouts


@dataclass
class LayoutJob:
    """The UMAP pass of one evaluation: its future and where it is."""

    future: Future[MapLayout] = field(default_factory=Future)
    stage: str = "starting"
    fraction: float = 0.0

    def progress(self, stage: str, fraction: float) -> None:
        self.stage, self.fraction = stage, fraction


@st.cache_resource(show_spinner=False, max_entries=16)
def map_layout_job(config_path: str, model: str, dataset: str, fingerprint: str) -> LayoutJob:
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

    resources.background_thread("embedding-map", run)
    return job


@st.cache_resource(show_spinner=False, max_entries=16)
def pca_layout(config_path: str, model: str, dataset: str, fingerprint: str) -> MapLayout:
    """The PCA layout shown until the UMAP one is ready."""
    return quick_layout(resources.evaluation(config_path, model, dataset))


def map_layout(
    config_path: str, model: str, dataset: str, fingerprint: str
) -> tuple[MapLayout, str]:
    """The best layout there is now, and a note on it ("" once UMAP is shown)."""
    job = map_layout_job(config_path, model, dataset, fingerprint)
    if job.future.done():
        error = job.future.exception()
        if error is None:
            return job.future.result(), ""
        map_layout_job.clear(config_path, model, dataset, fingerprint)
        note = f"The UMAP layout failed ({error}); the PCA layout is shown."
        return pca_layout(config_path, model, dataset, fingerprint), note
    note = f"Computing the UMAP layout ({job.stage}, {job.fraction:.0%}); PCA shown meanwhile."
    return pca_layout(config_path, model, dataset, fingerprint), note
