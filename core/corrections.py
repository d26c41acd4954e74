"""Corrected labels: an overlay on a dataset's labels, kept in the notes database.

A correction records who, when, the dataset (its notes key,
:func:`core.data.datasets.dataset_key`), the image path, the label before it and the label
after it (class names), and where it came from (``source``: a file imported, a page). The
dataset's files are never changed. Corrections are only appended: the latest one of a path
wins, and correcting a path back to its given label undoes the earlier ones.

:func:`corrected_true` gives a result's ``true`` column with the corrections applied, mapping
paths to rows through the manifest in Arrow (no Python object per row beyond the corrections).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from core.notes import NotesStore, NotesValidationError, _author, _key, _now
from core.results import Results

__all__ = [
    "CorrectedLabels",
    "Correction",
    "CorrectionsStore",
    "corrected_true",
    "evaluated_positions",
    "manifest_rows",
    "stored_overlay",
]


class Correction(NamedTuple):
    """One correction of one image's label (class names); ``created`` is UTC ISO 8601."""

    path: str
    old: str
    new: str
    author: str
    created: str
    source: str


@dataclass(frozen=True)
class CorrectedLabels:
    """A result's labels with the corrections applied, aligned with its evaluated rows."""

    true: np.ndarray  # int32 [M]: the corrected label of each evaluated row
    changed: np.ndarray  # int64: positions (into the evaluated rows) whose label changed
    ignored: int  # corrections of paths not evaluated here, or to a label that is not a class

    @property
    def count(self) -> int:
        """How many evaluated images have a label other than the dataset's."""
        return len(self.changed)


class CorrectionsStore:
    """Label corrections in the database of ``notes`` (same rules: one transaction per call,
    committed on return, nothing overwritten; a failed write raises and stores nothing)."""

    def __init__(self, notes: NotesStore) -> None:
        self.notes = notes

    @property
    def read_only(self) -> bool:
        return self.notes.read_only

    def add(
        self,
        dataset: str,
        corrections: Iterable[tuple[str, str, str]],
        author: str,
        source: str = "",
    ) -> int:
        """Store (path, old label, new label) triples as ``author``'s, all or none, in one
        transaction; returns how many."""
        author = _author(author)
        now, rows = _now(), []
        for path, old, new in corrections:
            dataset, path = _key(dataset, path)
            if not isinstance(new, str) or not new or not isinstance(old, str):
                raise NotesValidationError(f"a correction of {path!r} needs a new label")
            rows.append((dataset, path, old, new, author, now, str(source)[:500]))
        if not rows:
            return 0
        with self.notes.transaction(write=True) as conn:
            conn.executemany(
                "INSERT INTO corrections (dataset, path, old, new, author, created, source)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
        return len(rows)

    def latest(self, dataset: str) -> list[Correction]:
        """The latest correction of each corrected path of ``dataset``, by path."""
        query = (
            "SELECT path, old, new, author, created, source FROM corrections WHERE id IN"
            " (SELECT max(id) FROM corrections WHERE dataset = ? GROUP BY path) ORDER BY path"
        )
        return self._read(query, (dataset,))

    def history(self, dataset: str, path: str | None = None) -> list[Correction]:
        """Every correction of ``dataset`` (of one ``path`` if given), oldest first."""
        query = (
            "SELECT path, old, new, author, created, source FROM corrections"
            " WHERE dataset = ?1 AND (?2 IS NULL OR path = ?2) ORDER BY id"
        )
        return self._read(query, (dataset, path))

    def _read(self, query: str, args: tuple[str | None, ...]) -> list[Correction]:
        with self.notes.transaction() as conn:
            if not _has_corrections(conn):
                return []
            return [Correction(*row) for row in conn.execute(query, args).fetchall()]


def _has_corrections(conn: sqlite3.Connection) -> bool:
    """Whether the database has the table (a read-only older one may not)."""
    found = conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'corrections'").fetchone()
    return found is not None


def manifest_rows(result: Results, paths: Sequence[str] | pa.Array) -> np.ndarray:
    """int64 [len(paths)]: the manifest row of each path, -1 where the result has none."""
    wanted = paths if isinstance(paths, pa.Array) else pa.array(list(paths), pa.string())
    if not len(wanted):
        return np.empty(0, np.int64)
    found = pc.index_in(wanted, value_set=result.manifest.column("path").combine_chunks())
    return np.asarray(found.fill_null(-1).to_numpy(zero_copy_only=False), dtype=np.int64)


def evaluated_positions(result: Results, rows: np.ndarray) -> np.ndarray:
    """int64: the position of each manifest row among the evaluated rows, -1 where skipped
    or unknown (-1)."""
    index = np.asarray(result.index, dtype=np.int64)
    rows = np.asarray(rows, dtype=np.int64)
    if not len(index):
        return np.full(len(rows), -1, np.int64)
    at = np.searchsorted(index, rows).clip(0, len(index) - 1)
    return np.where((rows >= 0) & (index[at] == rows), at, -1)


def corrected_true(result: Results, corrections: Sequence[Correction]) -> CorrectedLabels:
    """``result.true`` with ``corrections`` (e.g. :meth:`CorrectionsStore.latest`) applied.

    The manifest's path column is matched against the corrected paths in one Arrow hash
    lookup; a path corrected more than once takes its last correction in the sequence.
    """
    given = np.asarray(result.true, dtype=np.int32)
    if not corrections:
        return CorrectedLabels(given, np.empty(0, np.int64), 0)
    names = {name: i for i, name in enumerate(result.classes)}
    last = {c.path: names.get(c.new, -1) for c in corrections}  # the latest of a path wins
    targets = np.fromiter(last.values(), np.int32, len(last))
    found = pc.index_in(
        result.manifest.column("path").combine_chunks(), value_set=pa.array(list(last))
    )
    hit = np.asarray(found.fill_null(-1).to_numpy(zero_copy_only=False), dtype=np.int64)
    hit = hit[np.asarray(result.index, dtype=np.int64)]  # the evaluated rows only
    at = np.flatnonzero(hit >= 0)
    new = targets[hit[at]]
    valid = new >= 0
    true = given.copy()
    true[at[valid]] = new[valid]
    ignored = len(last) - int(valid.sum())
    return CorrectedLabels(true, np.flatnonzero(true != given).astype(np.int64), ignored)


def stored_overlay(notes: NotesStore, dataset: str, result: Results) -> CorrectedLabels:
    """:func:`corrected_true` of the corrections stored for ``dataset`` (its notes key)."""
    return corrected_true(result, CorrectionsStore(notes).latest(dataset))
