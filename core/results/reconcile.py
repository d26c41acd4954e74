"""Open a result folder made elsewhere against the dataset this server has.

A GPU machine or a batch job writes ``python -m core evaluate --out DIR/``; the shared server
names that folder in the model entry (``results = ["DIR"]``). Paths in it are relative to the
dataset root, so the folder survives a move. Rows whose image is missing here, or labelled
differently, are left out with their reason; everything that matches opens.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from core.data.datasets import ImageDataset
from core.errors import UserFacingError
from core.results.store import Results, SkippedFile, StoreError, open_results

__all__ = ["find_result", "reconcile"]


def find_result(folders: tuple[Path, ...], dataset: ImageDataset) -> Results | None:
    """The first complete result among ``folders`` made on a dataset named like ``dataset``."""
    for folder in folders:
        try:
            result = open_results(folder)
        except StoreError:
            continue
        if result.meta.get("dataset") == dataset.name:
            return reconcile(result, dataset)
    return None


def reconcile(result: Results, dataset: ImageDataset) -> Results:
    """``result`` restricted to the rows that match ``dataset`` (same path, same label);
    :attr:`Results.notes` says exactly what differs."""
    if tuple(result.classes) != tuple(dataset.classes):
        raise UserFacingError(
            f"result {result.folder} has {len(result.classes)} classes "
            f"({', '.join(result.classes[:5])}...) but dataset {dataset.name!r} has "
            f"{len(dataset.classes)} ({', '.join(dataset.classes[:5])}...)"
        )
    here = dict(dataset.samples)
    paths = result.manifest.column("path").to_pylist()
    labels = result.manifest.column("label").to_numpy()
    found = np.array([here.get(p, -1) for p in paths], dtype=np.int64)
    missing = np.flatnonzero(found < 0)
    relabelled = np.flatnonzero((found >= 0) & (found != labels))
    extra = len(here.keys() - set(paths))
    notes = []
    skipped = list(result.skipped)
    names = dataset.classes
    for rows, what in ((missing, "missing here"), (relabelled, "labelled differently here")):
        if len(rows):
            shown = ", ".join(paths[i] for i in rows[:3]) + (" ..." if len(rows) > 3 else "")
            notes.append(f"{len(rows):,} image(s) of the result are {what}: {shown}")
    for i in missing:
        skipped.append(SkippedFile(paths[i], f"not in dataset {dataset.name!r} on this server"))
    for i in relabelled:
        reason = f"labelled {names[found[i]]} here, {names[labels[i]]} in the result"
        skipped.append(SkippedFile(paths[i], reason))
    if extra:
        notes.append(f"{extra:,} image(s) of dataset {dataset.name!r} are not in the result")
    if not notes:
        return result
    rows = np.union1d(result.skipped_rows, np.concatenate([missing, relabelled]))
    return replace(
        result, skipped=tuple(skipped), skipped_rows=rows.astype(np.int64), notes=tuple(notes)
    )
