"""Label quality and model comparison for the dashboard, computed once per evaluation."""

from __future__ import annotations

from concurrent.futures import Future, wait
from dataclasses import replace
from functools import partial
from typing import TYPE_CHECKING

import numpy as np
import streamlit as st

from core import Results
from core.analysis.label_quality import LabelQuality, result_label_quality
from core.analysis.metrics import confusion_matrix
from dashboard import resources

if TYPE_CHECKING:  # SciPy and scikit-learn load when two models are compared, not before
    from core.analysis.comparison import Comparison, ModelResults


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


#: Up to this many probabilities (images × classes) a page that marks suspected label errors
#: waits for them (about a second); past it the page is drawn at once and marked when they are
#: found (1,000,000 × 1,000: 5–20 s, the first time only: they are saved with the results).
WAIT_FOR_QUALITY_UP_TO = 20_000_000


@st.cache_resource(show_spinner=False, max_entries=32)
def _quality_pass(
    config_path: str, model_name: str, dataset_name: str, fingerprint: str
) -> Future[LabelQuality]:
    """Label quality of one evaluation, computed once per server on a thread of its own."""
    result = resources.evaluation(config_path, model_name, dataset_name)
    return resources.in_background("label-quality", partial(result_label_quality, result))


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
    if len(result.index) * result.num_classes <= WAIT_FOR_QUALITY_UP_TO:
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
