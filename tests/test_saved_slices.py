"""Named slices in the notes database: shared, replaced by name, removed by marking."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from core.notes import NotesStore, NotesValidationError
from core.saved_slices import SavedSlices


def test_save_replace_remove_and_keep_history(tmp_path: Path) -> None:
    db = tmp_path / "notes.db"
    alice, bob = SavedSlices(NotesStore(db)), SavedSlices(NotesStore(db))  # two sessions
    alice.save("ds", "site B dark", "site:B;brightness:..0.3", "alice")
    assert [(s.name, s.slice, s.author) for s in bob.all("ds")] == [
        ("site B dark", "site:B;brightness:..0.3", "alice")
    ]
    bob.save("ds", "site B dark", "site:B", "bob")  # the same name: replaced
    assert [(s.slice, s.author) for s in alice.all("ds")] == [("site:B", "bob")]
    assert alice.all("other") == []
    alice.remove("ds", "site B dark", "alice")
    assert bob.all("ds") == []
    with sqlite3.connect(db) as conn:  # nothing was erased
        assert conn.execute("SELECT count(*) FROM saved_slices").fetchone()[0] == 2


@pytest.mark.parametrize(
    ("name", "param", "writer"),
    [("", "site:B", "a"), ("x" * 101, "site:B", "a"), ("n", "", "a"), ("n", "site:B", " ")],
)
def test_bad_saves_are_refused_and_store_nothing(
    tmp_path: Path, name: str, param: str, writer: str
) -> None:
    store = SavedSlices(NotesStore(tmp_path / "notes.db"))
    with pytest.raises(NotesValidationError):
        store.save("ds", name, param, writer)
    assert store.all("ds") == []
