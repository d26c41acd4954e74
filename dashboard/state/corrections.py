"""Corrected labels on the Error-analysis page: the URL's ``labels=corrected`` swaps the
dataset's labels for the corrections stored beside the notes (:mod:`core.corrections`).

The corrected predictions table (``true`` corrected; ``true_prob`` and ``loss`` read again
from the stored probabilities for the changed rows; ``given``: the dataset's label) and its
matrix and per-class metrics are computed once per result and set of corrections, shared by
every session, read-only. The result itself, its caches and what is stored beside it are
never changed.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import pandas as pd
import streamlit as st

from core import Results
from core.analysis.metrics import confusion_matrix, per_class_metrics
from core.corrections import CorrectedLabels, CorrectionsStore, corrected_true
from core.data.datasets import dataset_key
from core.notes import NotesError
from dashboard.state import resources
from dashboard.state.settings import settings
from dashboard.state.slicing import SliceFilter

__all__ = ["CORRECTED", "PARAM", "Corrected", "active", "overlay", "predictions", "wanted"]

PARAM = "labels"  # the URL parameter
CORRECTED = "corrected"  # its value when the corrected labels are in use


@dataclass(frozen=True)
class Corrected:
    """A result's predictions with the corrected labels, and what is computed from them."""

    labels: CorrectedLabels
    predictions: pd.DataFrame  # result.predictions with ``true`` corrected and ``given`` added
    counts: np.ndarray  # the confusion matrix [true, pred] with the corrected labels
    metrics: pd.DataFrame  # per-class precision, recall, F1 and support
    stamp: str  # names this set of corrections (a cache key)
    corrections: int  # corrections stored for the dataset (the latest of each path)

    @property
    def changed(self) -> int:
        """How many evaluated images have a label other than the dataset's."""
        return self.labels.count

    def matrix(self, flt: SliceFilter | None = None) -> np.ndarray:
        """The corrected counts, of the slice ``flt``'s images when given."""
        if flt is None:
            return self.counts
        k = len(self.counts)
        keep = flt.positions
        pred = self.predictions["pred"].to_numpy()[keep]
        cells = self.labels.true[keep].astype(np.int64) * k + pred
        return np.bincount(cells, minlength=k * k).reshape(k, k)


def wanted() -> bool:
    """Whether the URL asks for the corrected labels."""
    return st.query_params.get(PARAM) == CORRECTED


def active(config_path: str, dataset: str, result: Results) -> Corrected | None:
    """The corrected labels when the URL asks for them and corrections exist, else None."""
    return overlay(config_path, dataset, result) if wanted() else None


def predictions(config_path: str, dataset: str, result: Results) -> pd.DataFrame:
    """The predictions table the page uses: corrected when :func:`active`, else the result's."""
    fixed = active(config_path, dataset, result)
    return result.predictions if fixed is None else fixed.predictions


def overlay(config_path: str, dataset: str, result: Results) -> Corrected | None:
    """The stored corrections of ``dataset`` applied to ``result`` (None: there are none, or
    the notes database cannot be read)."""
    try:
        store = resources.notes_store(config_path, settings().read_only)
        key = dataset_key(resources.project(config_path).dataset(dataset))
        latest = CorrectionsStore(store).latest(key)
    except NotesError:
        return None
    if not latest:
        return None
    digest = hashlib.sha1()
    for c in latest:
        digest.update(f"{c.path}\0{c.new}\n".encode())
    return _corrected(result.fingerprint, digest.hexdigest()[:16], result, tuple(latest))


@st.cache_resource(show_spinner=False, max_entries=16)
def _corrected(fingerprint: str, stamp: str, _result: Results, _latest: tuple) -> Corrected:  # type: ignore[type-arg]
    labels = corrected_true(_result, list(_latest))
    table = _result.predictions
    true = labels.true.astype(table["true"].dtype)
    true_prob = table["true_prob"].to_numpy().copy()
    loss = table["loss"].to_numpy().copy()
    changed = labels.changed
    if len(changed):  # the probability of the corrected label, read for those rows only
        probs = _result.probs(table["index"].to_numpy()[changed])
        picked = probs[np.arange(len(changed)), true[changed]]
        true_prob[changed] = picked
        loss[changed] = -np.log(np.maximum(picked, np.finfo(np.float32).tiny))
    fixed = table.assign(true=true, true_prob=true_prob, loss=loss, given=table["true"])
    counts = confusion_matrix(fixed, _result.num_classes)
    counts.setflags(write=False)
    metrics = per_class_metrics(fixed, _result.classes)
    return Corrected(labels, fixed, counts, metrics, stamp, len(_latest))
