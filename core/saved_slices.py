"""Named slices, saved in the notes database and shared by everyone on the server (like tags).

A saved slice is a name for a slice's URL form (``site:B;brightness:0.1..0.3``, see
:mod:`core.analysis.slices`) on one dataset (its notes key,
:func:`core.data.datasets.dataset_key`), with its author and time. Saving a name again
replaces its slice (the old row is kept, marked removed); removing only marks it. Every call is
one transaction under :class:`~core.notes.NotesStore`'s rules: a failed write raises and stores
nothing.
"""

from __future__ import annotations

import sqlite3
from typing import NamedTuple

from core.notes import NotesStore, NotesValidationError, _author, _now

__all__ = ["MAX_NAME_CHARS", "SavedSlice", "SavedSlices"]

MAX_NAME_CHARS = 100
MAX_SLICE_CHARS = 2_000


class SavedSlice(NamedTuple):
    """One named slice (``slice``: its URL form); ``created`` is UTC ISO 8601."""

    name: str
    slice: str
    author: str
    created: str


class SavedSlices:
    """The named slices in the database of ``notes``."""

    def __init__(self, notes: NotesStore) -> None:
        self.notes = notes

    @property
    def read_only(self) -> bool:
        return self.notes.read_only

    def save(self, dataset: str, name: str, slice_param: str, author: str) -> SavedSlice:
        """Save ``slice_param`` under ``name`` (replacing a slice of that name) as ``author``'s."""
        author = _author(author)
        name = name.strip() if isinstance(name, str) else ""
        if not name or len(name) > MAX_NAME_CHARS:
            raise NotesValidationError(f"a slice needs a name of 1 to {MAX_NAME_CHARS} characters")
        if not slice_param or len(slice_param) > MAX_SLICE_CHARS:
            raise NotesValidationError("there is no slice to save: apply one first")
        now = _now()
        with self.notes.transaction(write=True) as conn:
            conn.execute(
                "UPDATE saved_slices SET removed = ?, removed_by = ?"
                " WHERE dataset = ? AND name = ? AND removed IS NULL",
                (now, author, dataset, name),
            )
            conn.execute(
                "INSERT INTO saved_slices (dataset, name, slice, author, created)"
                " VALUES (?, ?, ?, ?, ?)",
                (dataset, name, slice_param, author, now),
            )
        return SavedSlice(name, slice_param, author, now)

    def remove(self, dataset: str, name: str, author: str) -> None:
        """Mark the slice ``name`` removed (kept in the database)."""
        author = _author(author)
        with self.notes.transaction(write=True) as conn:
            conn.execute(
                "UPDATE saved_slices SET removed = ?, removed_by = ?"
                " WHERE dataset = ? AND name = ? AND removed IS NULL",
                (_now(), author, dataset, name),
            )

    def all(self, dataset: str) -> list[SavedSlice]:
        """The live named slices of ``dataset``, by name."""
        with self.notes.transaction() as conn:
            if not _has_table(conn):  # a read-only database from before saved slices
                return []
            rows = conn.execute(
                "SELECT name, slice, author, created FROM saved_slices"
                " WHERE dataset = ? AND removed IS NULL ORDER BY name",
                (dataset,),
            ).fetchall()
        return [SavedSlice(*row) for row in rows]


def _has_table(conn: sqlite3.Connection) -> bool:
    found = conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'saved_slices'").fetchone()
    return found is not None
