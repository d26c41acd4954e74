"""A result's per-image columns besides the predictions: the dataset's metadata and the image
properties measured in the evaluation, as typed columns aligned with the manifest rows.

Metadata comes from the dataset, not the model, so it is not part of the evaluation key: the
evaluation saves the dataset's metadata beside the result (``derived/metadata/``, a column set
of :mod:`core.data.metadata`, with the metadata's ``source``), and :func:`result_metadata`
refreshes that copy whenever the dataset it is opened with reads its metadata from another
source (the CSV was edited, a column added): a result always shows its dataset's current
metadata without being evaluated again, and a result folder opened alone still has its own.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from core.data.image_dataset import ImageDataset
from core.data.metadata import ColumnSet, read_column_set, write_column_set
from core.data.properties import property_columns
from core.results.store import Results

__all__ = ["METADATA", "metadata_folder", "result_metadata", "result_properties", "save_metadata"]

METADATA = "metadata"  # derived/metadata/


def metadata_folder(result: Results) -> Path:
    return result.folder / "derived" / METADATA


def save_metadata(result: Results, dataset: ImageDataset) -> ColumnSet:
    """``dataset``'s metadata aligned with ``result``'s manifest rows (by path), saved beside
    the result (where it can be: a read-only folder keeps it in memory only)."""
    columns = _aligned(result, dataset)
    with contextlib.suppress(OSError):  # a read-only or full disk: the columns are returned
        write_column_set(metadata_folder(result), columns, dataset.metadata_source)
    return columns


def result_metadata(result: Results, dataset: ImageDataset | None = None) -> ColumnSet:
    """The metadata columns of ``result``, one row per manifest row: ``dataset``'s current
    ones (saved again if the stored copy came from another source), or without a dataset the
    stored copy (no columns if there is none)."""
    rows = len(result.manifest)
    stored = read_column_set(metadata_folder(result))
    fits = stored is not None and stored[0].rows == rows
    if dataset is None:
        return stored[0] if stored is not None and fits else ColumnSet(rows=rows)
    if stored is not None and fits and stored[1] == dataset.metadata_source:
        return stored[0]
    return save_metadata(result, dataset)


def result_properties(result: Results) -> ColumnSet:
    """The image properties measured in ``result``'s evaluation, one row per manifest row
    (no columns for a result stored before properties were measured)."""
    rows = len(result.manifest)
    if not result.has_properties:
        return ColumnSet(rows=rows, source="no properties")
    return ColumnSet(property_columns(result.columns["properties"]), rows, "properties")


def _aligned(result: Results, dataset: ImageDataset) -> ColumnSet:
    """``dataset.metadata`` in the order of ``result``'s manifest (rows it lacks: missing)."""
    metadata = dataset.metadata
    rows = len(result.manifest)
    if not len(metadata):
        return ColumnSet(rows=rows, source=dataset.metadata_source)
    theirs = result.manifest.column("path")
    mine = pa.array(dataset.paths, pa.string())
    if len(theirs) == len(mine) and pc.all(pc.equal(theirs, mine)).as_py() is not False:
        return ColumnSet(list(metadata), rows, dataset.metadata_source)
    index = pc.index_in(theirs, value_set=mine).fill_null(-1)
    aligned = metadata.take(np.asarray(index.to_numpy(zero_copy_only=False), np.int64))
    return ColumnSet(list(aligned), rows, dataset.metadata_source)
