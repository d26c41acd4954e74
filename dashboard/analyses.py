"""Label quality and model comparison for the dashboard, computed once per evaluation."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import streamlit as st

from core import Results
from core.comparison import Comparison, ModelResults, compare
from core.label_quality import LabelQuality, label_quality
from dashboard import resources


def arrays(result: Results) -> tuple[ModelResults, np.ndarray]:
    """The adapter from an evaluation to the arrays the analyses take, plus probs [N, K]
    (the one place to re-point when the results store changes)."""
    table = result.predictions
    k = result.num_classes
    probs = result.probs(result.index) if len(table) else np.zeros((0, k), np.float32)
    return ModelResults(
        model=result.meta.get("model", ""),
        dataset=result.meta.get("dataset", ""),
        classes=tuple(result.classes),
        paths=table["path"].to_numpy(dtype=str),
        true=table["true"].to_numpy(dtype=np.int64),
        pred=table["pred"].to_numpy(dtype=np.int64),
        true_prob=table["true_prob"].to_numpy(dtype=np.float32),
    ), probs


@st.cache_resource(show_spinner=False, max_entries=32)
def quality(config_path: str, model_name: str, dataset_name: str, fingerprint: str) -> LabelQuality:
    """Label quality of one evaluation's rows (shared, read-only; keyed by its fingerprint)."""
    rows, probs = arrays(resources.evaluation(config_path, model_name, dataset_name))
    return label_quality(rows.true, probs)


def flagged_matrix(result: Results, flags: LabelQuality) -> np.ndarray:
    """[true, pred] counts of the images flagged as suspected label errors."""
    rows, _ = arrays(result)
    k = result.num_classes
    hit = flags.is_issue
    return np.bincount(rows.true[hit] * k + rows.pred[hit], minlength=k * k).reshape(k, k)


@st.cache_resource(show_spinner=False, max_entries=16)
def comparison(
    config_path: str, model_a: str, model_b: str, dataset_name: str, fingerprints: tuple[str, str]
) -> Comparison:
    """A vs B on one dataset; raises UserFacingError for a mismatched pair."""
    a, b = (
        replace(arrays(resources.evaluation(config_path, m, dataset_name))[0], model=m)
        for m in (model_a, model_b)
    )
    return compare(a, b)
