"""Slices, server-wide: a result's slice columns, the slice finder's pass, and the rows of the
slice a URL names (computed once per result and slice, shared by every session, read-only).

The quick columns (metadata, image properties, stored embedding clusters, true class) are
ready at once; the finder's pass runs in the background (it also clusters the embeddings when
that was never done), and from then on its columns, with the clusters, are the result's.
"""

from __future__ import annotations

from concurrent.futures import Future
from dataclasses import dataclass

import numpy as np
import streamlit as st

from core import Results
from core.analysis.slice_columns import result_columns
from core.analysis.slice_finder import FoundSlices, result_slices, stored_slices
from core.analysis.slices import Slice, SliceError, slice_table
from core.data.metadata import ColumnSet
from dashboard.state import resources

__all__ = [
    "Finding",
    "SliceFilter",
    "columns",
    "finder_pass",
    "slice_filter",
    "sliced_matrix",
    "table",
]


@dataclass(frozen=True)
class Finding:
    """The finder's pass: the columns it searched (clusters included) and what it found."""

    columns: ColumnSet
    found: FoundSlices


@dataclass(frozen=True)
class SliceFilter:
    """The slice a page is restricted to, as masks: ``positions`` over the evaluated rows
    (``result.true``, ``result.pred``, derived arrays), ``rows`` over the manifest rows (a
    table's ``index`` column)."""

    slice: Slice
    param: str
    positions: np.ndarray
    rows: np.ndarray

    @property
    def images(self) -> int:
        return int(self.positions.sum())

    def keep(self, manifest_rows: np.ndarray) -> np.ndarray:
        """bool per manifest row given: inside the slice."""
        return self.rows[np.asarray(manifest_rows, np.int64)]


@st.cache_resource(show_spinner=False, max_entries=16)
def _quick_columns(
    config_path: str, model: str, dataset: str, fingerprint: str, _result: Results
) -> ColumnSet:
    data = resources.dataset(config_path, dataset, model)
    return result_columns(_result, data, clusters=False)


@st.cache_resource(show_spinner=False, max_entries=16)
def _finder_pass(
    config_path: str, model: str, dataset: str, fingerprint: str, _result: Results
) -> Future[Finding]:
    def find() -> Finding:
        data = resources.dataset(config_path, dataset, model)
        found_columns = result_columns(_result, data, clusters=True)
        return Finding(found_columns, result_slices(_result, found_columns))

    quick = _quick_columns(config_path, model, dataset, fingerprint, _result)
    stored = stored_slices(_result, quick) if _has_clusters_or_none(_result, quick) else None
    if stored is not None:  # found before, on the same columns: no thread
        done: Future[Finding] = Future()
        done.set_result(Finding(quick, stored))
        return done
    return resources.in_background("slice finder", find)


def _has_clusters_or_none(result: Results, quick: ColumnSet) -> bool:
    """The quick columns are the finder's when they hold the clusters, or when the result has
    no embeddings to cluster."""
    return "cluster" in quick or not result.has_embeddings


def finder_pass(config_path: str, model: str, dataset: str, result: Results) -> Future[Finding]:
    """The slice finder of ``result``, started on first call (stored beside the result)."""
    return _finder_pass(config_path, model, dataset, result.fingerprint, result)


def columns(config_path: str, model: str, dataset: str, result: Results) -> ColumnSet:
    """The slice columns: the finder's (with embedding clusters) once its pass is done, else
    the quick ones. The pass is not started here."""
    job = _finder_pass(config_path, model, dataset, result.fingerprint, result)
    if job.done() and job.exception() is None:
        return job.result().columns
    return _quick_columns(config_path, model, dataset, result.fingerprint, result)


@st.cache_resource(show_spinner=False, max_entries=32)
def _table(fingerprint: str, source: str, _columns: ColumnSet, _result: Results):  # type: ignore[no-untyped-def]
    return slice_table(_columns, _result.true, _result.pred)


def table(config_path: str, model: str, dataset: str, result: Results):  # type: ignore[no-untyped-def]
    """The slice table of every column (core.analysis.slices.slice_table), cached."""
    found = columns(config_path, model, dataset, result)
    return _table(result.fingerprint, found.source, found, result)


@st.cache_resource(show_spinner=False, max_entries=64)
def _filter(fingerprint: str, source: str, param: str, _columns: ColumnSet, _result: Results):  # type: ignore[no-untyped-def]
    chosen = Slice.parse(param)
    positions = chosen.mask(_columns)
    rows = np.zeros(len(_result.manifest), dtype=bool)
    rows[_result.index[positions]] = True
    positions.setflags(write=False)
    rows.setflags(write=False)
    return SliceFilter(chosen, chosen.to_param(), positions, rows)


def slice_filter(
    config_path: str, model: str, dataset: str, result: Results, where: str
) -> SliceFilter | None:
    """The slice ``where`` names, over ``result`` (None when ``where`` is empty); raises
    :class:`SliceError` with the reason when it does not fit the result's columns."""
    if not where:
        return None
    found = columns(config_path, model, dataset, result)
    try:
        return _filter(result.fingerprint, found.source, where, found, result)
    except SliceError:
        if "cluster" in where and "cluster" not in found:  # clusters still being computed
            raise SliceError(
                "the embedding clusters are still being computed; the slice applies once "
                "the Slices page has found them"
            ) from None
        raise


@st.cache_resource(show_spinner=False, max_entries=64)
def _sliced_matrix(
    fingerprint: str,
    param: str,
    k: int,
    flagged: bool,
    _flt: SliceFilter,
    _result: Results,
    _also: np.ndarray | None = None,
) -> np.ndarray:
    keep = _flt.positions if _also is None else _flt.positions & _also
    cells = _result.true[keep].astype(np.int64) * k + _result.pred[keep]
    counts = np.bincount(cells, minlength=k * k).reshape(k, k)
    counts.setflags(write=False)
    return counts


def sliced_matrix(
    result: Results, flt: SliceFilter, flagged: np.ndarray | None = None
) -> np.ndarray:
    """Confusion-matrix counts [true, pred] of the slice's images (with ``flagged``, a bool
    mask over the evaluated rows such as the suspected label errors: of those only)."""
    k = result.num_classes
    return _sliced_matrix(
        result.fingerprint, flt.param, k, flagged is not None, flt, result, flagged
    )
