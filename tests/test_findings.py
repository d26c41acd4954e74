"""Findings and corrected labels in the notes database: pin, edit, history, filters, deletion,
validation, the never-lose rules (a failed save raises with the draft and writes nothing), the
schema migration from a notes-only database, and bulk tagging."""

from __future__ import annotations

import os
import sqlite3
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from core.corrections import CorrectionsStore
from core.findings import MAX_PATHS, STATUSES, FindingSaveError, FindingsStore
from core.notes import (
    _MIGRATIONS,
    SCHEMA_VERSION,
    NotesError,
    NotesPermissionError,
    NotesStore,
    NotesValidationError,
)
from core.tagging import tag_images

DS = "dataset-key"
TRICKY = '<script>alert("x")</script> & "quoted"\nsecond line é 日本'


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "notes" / "notes.sqlite"


@pytest.fixture
def store(db: Path) -> FindingsStore:
    return FindingsStore(NotesStore(db))


def _rows(db: Path, table: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(db) as raw:
        rows = raw.execute(f"SELECT * FROM {table} ORDER BY rowid").fetchall()
    raw.close()
    return rows


def test_pin_read_back_everything(store: FindingsStore) -> None:
    paths = [f"cat/{i}.png" for i in range(MAX_PATHS + 12)]
    made = store.create(
        DS,
        "pattern",
        "Reads the corner mark",
        " ann ",
        model="resnet",
        text=TRICKY,
        owner="bob",
        ticket="https://tracker.example/ML-12",
        link="patterns?model=resnet&pattern=1",
        paths=paths,
        context={"true": "circle", "pred": "star", "verdict": "causal"},
    )
    assert made == store.get(made.id)
    assert (made.title, made.text, made.status, made.owner) == (
        "Reads the corner mark",
        TRICKY,
        "open",
        "bob",
    )
    assert (made.author, made.editor, made.version, made.model) == ("ann", "ann", 1, "resnet")
    assert made.paths == tuple(paths[:MAX_PATHS]) and made.more == 12 and made.images == 62
    assert made.context == {"true": "circle", "pred": "star", "verdict": "causal"}
    assert made.ticket_url == made.ticket and made.created.endswith("+00:00")
    sample = store.create(DS, "slice", "Site B", "ann", paths=["a.png", "b.png"], total=300)
    assert (sample.paths, sample.more, sample.images) == (("a.png", "b.png"), 298, 300)


def test_every_edit_is_a_new_version_and_the_history_keeps_them_all(
    store: FindingsStore, db: Path
) -> None:
    made = store.create(DS, "cell", "3 read as 8", "ann", text="first words")
    store.update(made.id, "bob", status="confirmed", owner="bob")
    last = store.update(made.id, "carl", text="rewritten", base_version=2)
    assert (last.version, last.status, last.owner, last.text) == (
        3,
        "confirmed",
        "bob",
        "rewritten",
    )
    assert (last.author, last.editor) == ("ann", "carl")
    history = store.history(made.id)
    assert [(h.version, h.editor, h.status, h.text) for h in history] == [
        (1, "ann", "open", "first words"),
        (2, "bob", "confirmed", "first words"),
        (3, "carl", "confirmed", "rewritten"),
    ]
    assert len(_rows(db, "finding_versions")) == 3  # nothing overwritten in the file


def test_a_stale_edit_is_refused_with_its_draft_and_changes_nothing(store: FindingsStore) -> None:
    made = store.create(DS, "cell", "title", "ann")
    store.update(made.id, "bob", text="bob's words")
    with pytest.raises(FindingSaveError, match="changed by bob") as caught:
        store.update(made.id, "carl", base_version=1, text="carl's long text")
    assert caught.value.draft["text"] == "carl's long text"
    assert store.get(made.id).text == "bob's words" and store.get(made.id).version == 2


def test_filters_by_dataset_status_owner_and_model(store: FindingsStore) -> None:
    a = store.create(DS, "cell", "a", "ann", owner="bob", model="m1")
    b = store.create(DS, "image", "b", "ann", owner="carl", status="fixed", model="m2")
    c = store.create(DS, "map selection", "c", "ann", status="won't fix")
    d = store.create("other", "cell", "d", "ann", owner="bob")
    ids = lambda found: [f.id for f in found]  # noqa: E731
    assert ids(store.findings(DS)) == [c.id, b.id, a.id]
    assert ids(store.findings(DS, newest_first=False)) == [a.id, b.id, c.id]
    assert ids(store.findings()) == [d.id, c.id, b.id, a.id]
    assert ids(store.findings(DS, status="fixed")) == [b.id]
    assert ids(store.findings(DS, status=["open", "won't fix"])) == [c.id, a.id]
    assert ids(store.findings(DS, status=[])) == []
    assert ids(store.findings(DS, owner="bob")) == [a.id]
    assert ids(store.findings(DS, owner="")) == [c.id]  # unassigned
    assert ids(store.findings(DS, model="m1")) == [c.id, a.id]  # no model: any
    assert store.owners(DS) == ["bob", "carl"] and store.owners() == ["bob", "carl"]
    assert set(STATUSES) == {"open", "confirmed", "fixed", "won't fix"}


def test_only_the_author_deletes_and_the_finding_stays_in_the_file(
    store: FindingsStore, db: Path
) -> None:
    made = store.create(DS, "cell", "title", "ann")
    with pytest.raises(NotesPermissionError, match="ann"):
        store.delete(made.id, "bob")
    store.delete(made.id, "ann")
    assert store.findings(DS) == []
    with pytest.raises(NotesError, match="no finding"):
        store.get(made.id)
    assert [h.title for h in store.history(made.id)] == ["title"]
    assert _rows(db, "findings")[0][-1] == "ann"  # deleted_by, kept


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"title": "  "}, "needs a title"),
        ({"title": "x" * 201}, "at most"),
        ({"status": "done"}, "unknown status"),
        ({"link": "https://evil.example/"}, "relative dashboard URL"),
        ({"link": "//evil.example/x"}, "relative dashboard URL"),
        ({"link": "javascript:alert(1)"}, "relative dashboard URL"),
        ({"paths": "a.png"}, "list of image paths"),
        ({"paths": ["a.png", ""]}, "list of image paths"),
        ({"paths": ["a.png", "b.png"], "total": 1}, "cannot hold"),
        ({"colour": "red"}, "no field"),
    ],
)
def test_bad_edits_are_refused_and_change_nothing(
    store: FindingsStore, change: dict[str, object], message: str
) -> None:
    made = store.create(DS, "cell", "kept", "ann", text="kept text")
    with pytest.raises(NotesValidationError, match=message):
        store.update(made.id, "bob", **change)  # type: ignore[arg-type]
    assert store.get(made.id) == made and len(store.history(made.id)) == 1


def test_bad_pins_are_refused(store: FindingsStore) -> None:
    with pytest.raises(NotesValidationError, match="unknown kind"):
        store.create(DS, "hunch", "title", "ann")
    with pytest.raises(NotesValidationError, match="name"):
        store.create(DS, "cell", "title", " ")
    with pytest.raises(NotesValidationError, match="dataset"):
        store.create("", "cell", "title", "ann")
    assert store.findings() == []


def test_a_ticket_that_is_not_http_is_text_not_a_link(store: FindingsStore) -> None:
    made = store.create(DS, "cell", "t", "ann", ticket="javascript:alert(1)")
    assert made.ticket == "javascript:alert(1)" and made.ticket_url == ""
    assert store.update(made.id, "ann", ticket="ML-12").ticket_url == ""


def test_a_save_on_a_busy_database_raises_with_the_draft_and_writes_nothing(db: Path) -> None:
    store = FindingsStore(NotesStore(db, timeout=0.2))
    made = store.create(DS, "cell", "title", "ann")
    blocker = sqlite3.connect(db, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")  # another writer holds the lock
    try:
        with pytest.raises(FindingSaveError, match=r"not saved.*busy") as caught:
            store.update(made.id, "bob", text="a long paragraph typed in the form")
        assert caught.value.draft["text"] == "a long paragraph typed in the form"
        with pytest.raises(FindingSaveError) as pinned:
            store.create(DS, "image", "new one", "bob", text="keep me")
        assert pinned.value.draft["text"] == "keep me" and pinned.value.draft["title"] == "new one"
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert store.get(made.id).version == 1 and len(store.findings()) == 1
    assert store.update(made.id, "bob", text="retried").text == "retried"  # the retry works


def test_a_read_only_store_shows_findings_and_refuses_saves_with_the_draft(
    store: FindingsStore, db: Path
) -> None:
    made = store.create(DS, "cell", "visible", "ann")
    reader = FindingsStore(NotesStore(db, read_only=True))
    assert reader.read_only and reader.findings(DS) == [made]
    with pytest.raises(FindingSaveError, match="read-only") as caught:
        reader.update(made.id, "bob", text="draft")
    assert caught.value.draft["text"] == "draft"
    with pytest.raises(FindingSaveError, match="read-only"):
        reader.create(DS, "cell", "t", "bob")
    with pytest.raises(NotesPermissionError, match="read-only"):
        CorrectionsStore(reader.notes).add(DS, [("a.png", "cat", "dog")], "bob")
    assert store.get(made.id) == made


@contextmanager
def _tmpfs(folder: Path) -> Iterator[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(folder)], check=True)
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root (CI runs as root)")
def test_a_save_on_a_folder_made_read_only_keeps_the_draft(tmp_path: Path) -> None:
    with _tmpfs(tmp_path / "mnt") as folder:
        store = FindingsStore(NotesStore(folder / "notes.sqlite"))
        made = store.create(DS, "cell", "title", "ann", text="saved")
        subprocess.run(["mount", "-o", "remount,ro", str(folder)], check=True)
        with pytest.raises(FindingSaveError, match="read-only") as caught:
            store.update(made.id, "ann", text="typed while the disk went read-only")
        assert caught.value.draft["text"] == "typed while the disk went read-only"
        assert store.get(made.id).text == "saved"  # still readable
        subprocess.run(["mount", "-o", "remount,rw", str(folder)], check=True)


def test_a_notes_only_database_is_migrated_and_keeps_its_notes(db: Path) -> None:
    db.parent.mkdir(parents=True)
    with sqlite3.connect(db) as raw:
        for statement in _MIGRATIONS[0]:
            raw.execute(statement)
        raw.execute(
            "INSERT INTO notes (dataset, path, author, text, created) VALUES (?, ?, ?, ?, ?)",
            (DS, "a.png", "ann", "old note", "2026-01-01T00:00:00+00:00"),
        )
        raw.execute("PRAGMA user_version = 1")
    raw.close()
    reader = NotesStore(db, read_only=True)  # not migrated: findings and corrections are empty
    assert FindingsStore(reader).findings() == [] and CorrectionsStore(reader).latest(DS) == []
    notes = NotesStore(db)
    assert [n.text for n in notes.notes(DS, "a.png")] == ["old note"]
    with sqlite3.connect(db) as raw:
        assert raw.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 3
    raw.close()
    assert FindingsStore(notes).create(DS, "image", "t", "ann").id == 1


def test_corrections_are_appended_and_the_latest_per_path_wins(db: Path) -> None:
    store = CorrectionsStore(NotesStore(db))
    assert store.add(DS, [("a.png", "cat", "dog"), ("b.png", "cat", "bird")], "ann", "f.json") == 2
    store.add(DS, [("a.png", "dog", "cat")], "bob")  # back to its given label
    store.add("other", [("a.png", "cat", "fish")], "bob")
    latest = {c.path: (c.old, c.new, c.author) for c in store.latest(DS)}
    assert latest == {"a.png": ("dog", "cat", "bob"), "b.png": ("cat", "bird", "ann")}
    assert [(c.new, c.source) for c in store.history(DS, "a.png")] == [
        ("dog", "f.json"),
        ("cat", ""),
    ]
    with pytest.raises(NotesValidationError):
        store.add(DS, [("c.png", "cat", "dog"), ("", "cat", "dog")], "ann")
    assert len(store.history(DS)) == 3  # all or nothing


def test_bulk_tagging_in_one_transaction(db: Path) -> None:
    notes = NotesStore(db)
    notes.add_tag(DS, "a.png", "blurry", "ann")
    done = tag_images(notes, DS, ["a.png", "b.png", "b.png", "c.png"], "blurry", "bob", "check")
    assert (done.tagged, done.had_it, done.noted) == (2, 1, 3)
    assert notes.paths_with_tag(DS, "blurry") == {"a.png", "b.png", "c.png"}
    assert [(n.author, n.text) for n in notes.notes(DS, "c.png")] == [("bob", "check")]
    with pytest.raises(NotesValidationError):
        tag_images(notes, DS, ["d.png"], " ", "bob")
    assert notes.tags(DS, "d.png") == set()
