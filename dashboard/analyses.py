"""Label quality and model comparison for the dashboard, computed once per evaluation."""

from __future__ import annotations

from dataclasses import replace
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


@st.cache_resource(show_spinner=False, max_entries=32)
def quality(config_path: str, model_name: str, dataset_name: str, fingerprint: str) -> LabelQuality:
    """Label quality of one evaluation's rows (shared, read-only; keyed by its fingerprint)."""
    return result_label_quality(resources.evaluation(config_path, model_name, dataset_name))


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
