"""Tagging many images at once (``python -m core tag``): the dashboard's store, one transaction.

The tags and notes go into the same :class:`~core.notes.NotesStore` the dashboard writes, under
its rules: all are written or none, on disk when the call returns, and a tag an image already
carries is left as it is.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

from core.notes import NotesStore, _author, _insert_tag, _key, _note_text, _now, _tag

__all__ = ["Tagged", "tag_images"]


class Tagged(NamedTuple):
    """What :func:`tag_images` did."""

    tagged: int  # images that got the tag
    had_it: int  # images that already carried it
    noted: int  # notes written


def tag_images(
    store: NotesStore,
    dataset: str,
    paths: Iterable[str],
    tag: str,
    author: str,
    note: str = "",
) -> Tagged:
    """Tag each of ``paths`` with ``tag`` (and add ``note`` to each, if given) as ``author``,
    in one transaction."""
    tag, author = _tag(tag), _author(author)
    text = _note_text(note) if note else ""
    keys = [_key(dataset, path) for path in dict.fromkeys(paths)]
    tagged = noted = 0
    with store.transaction(write=True) as conn:
        for key_dataset, path in keys:
            tagged += _insert_tag(conn, key_dataset, path, tag, author)
            if text:
                conn.execute(
                    "INSERT INTO notes (dataset, path, author, text, created)"
                    " VALUES (?, ?, ?, ?, ?)",
                    (key_dataset, path, author, text, _now()),
                )
                noted += 1
    return Tagged(tagged, len(keys) - tagged, noted)
