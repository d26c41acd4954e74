"""Every column a slice can name, for one result: metadata, image properties, embedding
cluster and the true class, aligned with the result's evaluated rows.

Order and names: the dataset's metadata columns first (a metadata column named like one of
the fixed columns gets ``_meta`` appended), then the image properties
(:data:`core.data.properties.PROPERTIES`), ``cluster`` and ``class`` (the true class; the
prediction and its confidence are never slice columns: they restate the error).
"""

from __future__ import annotations

import numpy as np

from core.analysis.clusters import result_clusters, stored_clusters
from core.data.image_dataset import ImageDataset
from core.data.metadata import Column, ColumnSet
from core.results import Results
from core.results.columns import result_metadata, result_properties

__all__ = ["CLASS", "result_columns"]

CLASS = "class"  # the true class column


def result_columns(
    result: Results, dataset: ImageDataset | None = None, clusters: bool = True
) -> ColumnSet:
    """The slice columns of ``result``, one row per evaluated image (``result.index``, the
    rows of ``result.true`` and ``result.pred``).

    Metadata is ``dataset``'s (saved beside the result when it changed), or without a dataset
    the copy stored with the result. With ``clusters`` the embedding clusters are computed
    when they are not stored yet (seconds at a million images: do it in the background);
    without, only stored ones are used. Columns whose data is absent (no metadata, a result
    stored before properties were measured, no embeddings) are left out.
    """
    rows = len(result.manifest)
    properties = result_properties(result)
    fixed = list(properties)
    found = result_clusters(result) if clusters else stored_clusters(result)
    if found is not None:
        fixed.append(found.column())
    labels = result.manifest.column("label").to_numpy().astype(np.int32)
    fixed.append(Column(CLASS, "categorical", labels, tuple(result.classes)))
    clustered = f"clusters {found.count}" if found is not None else "no clusters"
    source = f"{result.fingerprint}|{len(result.index)}|{properties.source}|{clustered}"
    every = result_metadata(result, dataset).merged(ColumnSet(fixed, rows, source))
    index = result.index
    if len(index) == rows:  # nothing skipped: the rows are the manifest's
        return every
    return every.take(index)
