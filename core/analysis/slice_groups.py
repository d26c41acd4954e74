"""The slice groups of a regression check: named slices and every metadata value, as masks.

``python -m core check`` and the Compare page's heatmap test the same "slice" groups
(:func:`core.analysis.regression.check_results`): each saved slice by its name, then each
value (or quantile bin, :func:`core.analysis.slices.column_bins`) of each metadata column,
named ``<column> = <value>`` (``site = B``). The saved slices are given as (name, URL form)
pairs, since they live in the notes database above this layer
(:class:`core.saved_slices.SavedSlices`). A saved slice that no longer fits the columns (a
column gone, a value never taken) is left out with the reason.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from core.analysis.slice_columns import result_columns
from core.analysis.slices import Slice, SliceError, column_bins
from core.data.image_dataset import ImageDataset
from core.data.metadata import ColumnSet
from core.results import Results
from core.results.columns import result_metadata

__all__ = ["SliceGroups", "result_slice_groups", "slice_groups"]


@dataclass(frozen=True)
class SliceGroups:
    """Named boolean masks over the columns' rows (named slices first, then metadata values
    column by column) and the named slices left out, with why."""

    masks: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    skipped: dict[str, str] = field(default_factory=dict)


def slice_groups(
    columns: ColumnSet, metadata: Sequence[str], named: Iterable[tuple[str, str]] = ()
) -> SliceGroups:
    """The masks of each named slice (``(name, URL form)``, :meth:`Slice.parse`) and of each
    value of the ``metadata`` columns of ``columns``. A metadata value named like a named
    slice is not added again (the named slice keeps its name)."""
    masks: dict[str, np.ndarray] = {}
    skipped: dict[str, str] = {}
    for name, param in named:
        try:
            masks[name] = Slice.parse(param).mask(columns)
        except SliceError as exc:
            skipped[name] = str(exc)
    for column in metadata:
        if column not in columns:
            continue
        bins = column_bins(columns[column])
        for code, label in enumerate(bins.labels):
            masks.setdefault(f"{column} = {label}", bins.codes == code)
    return SliceGroups(masks, skipped)


def result_slice_groups(
    result: Results,
    dataset: ImageDataset | None = None,
    named: Iterable[tuple[str, str]] = (),
    columns: ColumnSet | None = None,
) -> SliceGroups:
    """:func:`slice_groups` over ``result``'s evaluated rows (``Results.true``'s order).

    ``columns``: the result's slice columns if already at hand
    (:func:`core.analysis.slice_columns.result_columns`; default: computed without new
    embedding clusters). Its metadata columns are its first ones (renamed ``<name>_meta`` when
    an image property has the name), so a clash never tests a property as metadata.
    """
    found = columns if columns is not None else result_columns(result, dataset, clusters=False)
    count = len(result_metadata(result, dataset))
    return slice_groups(found, found.names[:count], named)
