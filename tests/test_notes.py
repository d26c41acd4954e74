"""The tags-and-notes store: round trips, authorship, export, concurrency, durability, safety."""

from __future__ import annotations

import csv
import io
import json
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from core.errors import UserFacingError
from core.notes import (
    CSV_COLUMNS,
    DEFAULT_TAGS,
    MAX_NOTE_CHARS,
    SCHEMA_VERSION,
    NotesError,
    NotesPermissionError,
    NotesStore,
    NotesValidationError,
    PathSummary,
)

ROOT = Path(__file__).resolve().parents[1]
DS = "fingerprint-1"
TRICKY = 'a, b; "quoted" \'single\'\nsecond line\r\n<script>alert("x")</script> &amp; é 日本'


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "sub" / "notes.sqlite"


@pytest.fixture
def store(db: Path) -> NotesStore:
    return NotesStore(db)


def test_notes_round_trip_oldest_first_per_image(store: NotesStore) -> None:
    first = store.add_note(DS, "cat/1.png", "ann", "first")
    store.add_note(DS, "cat/2.png", "bob", "other image")
    store.add_note("fingerprint-2", "cat/1.png", "bob", "other dataset")
    store.add_note(DS, "cat/1.png", "  bob ", "second")
    notes = store.notes(DS, "cat/1.png")
    assert [(n.author, n.text) for n in notes] == [("ann", "first"), ("bob", "second")]
    assert notes[0] == first
    assert first.dataset == DS and first.path == "cat/1.png"
    assert first.created.endswith("+00:00") and "T" in first.created
    assert store.notes(DS, "dog/unknown.png") == []


def test_note_text_is_stored_verbatim(store: NotesStore) -> None:
    store.add_note(DS, "a.png", "ann", TRICKY)
    store.add_note(DS, "a.png", "ann", "  padded  ")
    assert [n.text for n in store.notes(DS, "a.png")] == [TRICKY, "  padded  "]


def test_delete_only_own_note_and_keep_it_in_the_file(store: NotesStore, db: Path) -> None:
    note = store.add_note(DS, "a.png", "ann", "mine")
    kept = store.add_note(DS, "a.png", "bob", "his")
    with pytest.raises(NotesPermissionError, match="ann"):
        store.delete_note(note.id, "bob")
    assert len(store.notes(DS, "a.png")) == 2
    store.delete_note(note.id, "ann")
    store.delete_note(note.id, "ann")  # already deleted: nothing more to do
    assert store.notes(DS, "a.png") == [kept]
    with pytest.raises(NotesError, match="no note"):
        store.delete_note(9999, "ann")
    with sqlite3.connect(db) as raw:
        row = raw.execute("SELECT text, deleted FROM notes WHERE id = ?", (note.id,)).fetchone()
    assert row[0] == "mine" and row[1] is not None


def test_tags_round_trip(store: NotesStore) -> None:
    assert store.add_tag(DS, "a.png", "ambiguous", "ann") is True
    assert store.add_tag(DS, "a.png", " ambiguous ", "bob") is False
    assert store.add_tag(DS, "a.png", "team: blurry", "ann") is True
    assert store.tags(DS, "a.png") == {"ambiguous", "team: blurry"}
    assert store.tags(DS, "b.png") == set() and store.tags("other", "a.png") == set()
    assert store.remove_tag(DS, "a.png", "ambiguous", "bob") is True
    assert store.remove_tag(DS, "a.png", "ambiguous", "bob") is False
    assert store.tags(DS, "a.png") == {"team: blurry"}
    assert store.set_tags(DS, "a.png", ["label error", "ambiguous"], "ann") == {
        "label error",
        "ambiguous",
    }
    assert store.tags(DS, "a.png") == {"label error", "ambiguous"}
    assert store.add_tag(DS, "a.png", "team: blurry", "ann") is True  # re-adding works
    store.set_tags(DS, "a.png", [], "ann")
    assert store.tags(DS, "a.png") == set()


def test_tag_filter_and_tag_list(store: NotesStore) -> None:
    store.add_tag(DS, "a.png", "ambiguous", "ann")
    store.add_tag(DS, "b.png", "ambiguous", "ann")
    store.add_tag(DS, "b.png", "zebra team", "ann")
    store.add_tag(DS, "c.png", "gone", "ann")
    store.remove_tag(DS, "c.png", "gone", "ann")
    store.add_tag("other", "d.png", "ambiguous", "ann")
    assert store.paths_with_tag(DS, "ambiguous") == {"a.png", "b.png"}
    assert store.paths_with_tag(DS, "gone") == set()
    assert store.all_tags(DS) == [*DEFAULT_TAGS, "zebra team"]
    custom = NotesStore(store.path, default_tags=["b-team", "ambiguous"])
    assert custom.all_tags(DS) == ["b-team", "ambiguous", "zebra team"]


def test_counts_by_path(store: NotesStore) -> None:
    store.add_note(DS, "a.png", "ann", "one")
    store.add_note(DS, "a.png", "bob", "two")
    deleted = store.add_note(DS, "a.png", "bob", "three")
    store.delete_note(deleted.id, "bob")
    store.add_tag(DS, "b.png", "ambiguous", "ann")
    store.add_note(DS, "c.png", "ann", "note")
    store.add_tag(DS, "c.png", "label error", "ann")
    store.add_note("other", "z.png", "ann", "elsewhere")
    counts = store.counts_by_path(DS)
    assert counts == {
        "a.png": PathSummary(2, frozenset()),
        "b.png": PathSummary(0, frozenset({"ambiguous"})),
        "c.png": PathSummary(1, frozenset({"label error"})),
    }
    n_notes, tags = counts["c.png"]
    assert (n_notes, tags) == (1, {"label error"})
    assert store.counts_by_path(DS, ["b.png", "untouched.png"]) == {"b.png": counts["b.png"]}


def test_export_csv_parses_back_with_everything(store: NotesStore, tmp_path: Path) -> None:
    note = store.add_note(DS, "a,b.png", 'O\'Brien, "Bo"', TRICKY)
    store.add_note(DS, "a,b.png", "ann", "=1+1")
    gone = store.add_note(DS, "a,b.png", "ann", "deleted")
    store.delete_note(gone.id, "ann")
    store.add_tag(DS, "a,b.png", 'tag, "quoted"', "ann")
    store.add_tag("other", "x.png", "ambiguous", "bob")
    text = store.export_csv(DS, dest=tmp_path / "out.csv")
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[0] == list(CSV_COLUMNS)
    assert rows[1:] == [
        [DS, "a,b.png", "note", TRICKY, 'O\'Brien, "Bo"', note.created],
        [DS, "a,b.png", "note", "=1+1", "ann", rows[2][5]],
        [DS, "a,b.png", "tag", 'tag, "quoted"', "ann", rows[3][5]],
    ]
    with (tmp_path / "out.csv").open(newline="", encoding="utf-8") as handle:
        assert list(csv.reader(handle)) == rows
    everything = list(csv.DictReader(io.StringIO(store.export_csv())))
    assert {(r["dataset"], r["kind"]) for r in everything} == {
        (DS, "note"),
        (DS, "tag"),
        ("other", "tag"),
    }


def test_eight_concurrent_writers_lose_nothing(store: NotesStore) -> None:
    n_threads, per_thread = 8, 25
    barrier = threading.Barrier(n_threads, timeout=60)
    errors: list[BaseException] = []

    def write(worker: int) -> None:
        try:
            own = NotesStore(store.path) if worker % 2 else store  # shared and separate stores
            barrier.wait()
            for i in range(per_thread):
                own.add_note(DS, f"img{i % 3}.png", f"user{worker}", f"{worker}:{i}")
                if i % 4 == 0:  # reads then writes in one transaction
                    own.set_tags(DS, f"w{worker}.png", ["shared", f"t{i}"], f"user{worker}")
            own.add_tag(DS, "img0.png", f"tag{worker}", f"user{worker}")
        except BaseException as exc:
            errors.append(exc)
            barrier.abort()  # release the others rather than hang

    threads = [threading.Thread(target=write, args=(w,)) for w in range(n_threads)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    notes = [n for i in range(3) for n in store.notes(DS, f"img{i}.png")]
    assert sorted(n.text for n in notes) == sorted(
        f"{w}:{i}" for w in range(n_threads) for i in range(per_thread)
    )
    assert len({n.id for n in notes}) == n_threads * per_thread
    for i in range(3):  # oldest first: each worker's notes come in the order it wrote them
        image_notes = store.notes(DS, f"img{i}.png")
        for w in range(n_threads):
            seq = [int(n.text.split(":")[1]) for n in image_notes if n.author == f"user{w}"]
            assert seq == sorted(seq)
    assert store.tags(DS, "img0.png") == {f"tag{w}" for w in range(n_threads)}
    last = f"t{(per_thread - 1) // 4 * 4}"  # each worker's last set_tags
    assert store.paths_with_tag(DS, last) == {f"w{w}.png" for w in range(n_threads)}
    assert store.paths_with_tag(DS, "shared") == {f"w{w}.png" for w in range(n_threads)}


def test_reopened_store_sees_everything(store: NotesStore, db: Path) -> None:
    note = store.add_note(DS, "a.png", "ann", "before restart")
    store.add_tag(DS, "a.png", "spurious cue", "ann")
    del store
    reopened = NotesStore(db)
    assert reopened.notes(DS, "a.png") == [note]
    assert reopened.tags(DS, "a.png") == {"spurious cue"}


_CHILD = """
import json, sys, types
core = types.ModuleType("core")  # skip core/__init__ (it imports torch): only notes is needed
core.__path__ = [sys.argv[1]]
sys.modules["core"] = core
from core.notes import NotesStore
store = NotesStore(sys.argv[2])
seen = [n.text for n in store.notes("ds", "a.png")]
store.add_note("ds", "a.png", "child", "from the child")
store.add_tag("ds", "a.png", "child tag", "child")
print(json.dumps(seen))
"""


def test_another_process_sees_and_adds_notes(store: NotesStore, db: Path) -> None:
    store.add_note("ds", "a.png", "parent", "from the parent")
    result = subprocess.run(
        [sys.executable, "-c", _CHILD, str(ROOT / "core"), str(db)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == ["from the parent"]
    assert [n.text for n in store.notes("ds", "a.png")] == ["from the parent", "from the child"]
    assert NotesStore(db).tags("ds", "a.png") == {"child tag"}


def test_wal_mode_schema_version_and_committed_on_return(store: NotesStore, db: Path) -> None:
    store.add_note(DS, "a.png", "ann", "durable")
    with sqlite3.connect(db) as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert raw.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert raw.execute("SELECT text FROM notes").fetchall() == [("durable",)]


def _foreign_db(path: Path) -> bytes:
    with sqlite3.connect(path) as raw:
        raw.execute("CREATE TABLE accounts (id INTEGER)")
    raw.close()
    return path.read_bytes()


@pytest.mark.parametrize("read_only", [False, True])
@pytest.mark.parametrize(
    "content",
    [
        b"these are not the notes you are looking for\n" * 100,
        b"SQLite format 3\x00" + bytes(range(256)) * 32,
        None,  # a valid SQLite database of something else
    ],
    ids=["text", "damaged-sqlite", "foreign-sqlite"],
)
def test_unusable_file_gives_clear_error_and_is_untouched(
    tmp_path: Path, content: bytes | None, read_only: bool
) -> None:
    path = tmp_path / "notes.sqlite"
    if content is None:
        content = _foreign_db(path)
    else:
        path.write_bytes(content)
    with pytest.raises(NotesError, match=r"notes database|not an SQLite") as info:
        NotesStore(path, read_only=read_only)
    assert isinstance(info.value, UserFacingError)
    assert str(path) in str(info.value) and "untouched" in str(info.value)
    assert path.read_bytes() == content


def test_newer_schema_is_refused(db: Path) -> None:
    NotesStore(db).add_note(DS, "a.png", "ann", "kept")
    with sqlite3.connect(db) as raw:
        raw.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    raw.close()
    with pytest.raises(NotesError, match="newer version"):
        NotesStore(db)


def test_read_only_store_reads_but_refuses_writes(store: NotesStore, db: Path) -> None:
    note = store.add_note(DS, "a.png", "ann", "visible")
    store.add_tag(DS, "a.png", "ambiguous", "ann")
    reader = NotesStore(db, read_only=True)
    assert reader.notes(DS, "a.png") == [note]
    assert reader.counts_by_path(DS) == {"a.png": PathSummary(1, frozenset({"ambiguous"}))}
    writes = [
        lambda: reader.add_note(DS, "a.png", "ann", "no"),
        lambda: reader.delete_note(note.id, "ann"),
        lambda: reader.add_tag(DS, "a.png", "x", "ann"),
        lambda: reader.remove_tag(DS, "a.png", "ambiguous", "ann"),
        lambda: reader.set_tags(DS, "a.png", [], "ann"),
    ]
    for write in writes:
        with pytest.raises(PermissionError, match="read-only"):
            write()
    assert store.notes(DS, "a.png") == [note] and store.tags(DS, "a.png") == {"ambiguous"}
    store.add_note(DS, "a.png", "bob", "later")
    assert len(reader.notes(DS, "a.png")) == 2  # no caching: the next read sees new notes


def test_read_only_store_without_database_is_empty_and_creates_nothing(tmp_path: Path) -> None:
    reader = NotesStore(tmp_path / "missing" / "notes.sqlite", read_only=True)
    assert reader.notes(DS, "a.png") == [] and reader.all_tags(DS) == list(DEFAULT_TAGS)
    assert not (tmp_path / "missing").exists()


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda s: s.add_note(DS, "a.png", "", "text"), "name"),
        (lambda s: s.add_note(DS, "a.png", "   ", "text"), "name"),
        (lambda s: s.add_note(DS, "a.png", "ann", ""), "empty"),
        (lambda s: s.add_note(DS, "a.png", "ann", " \n\t"), "empty"),
        (lambda s: s.add_note(DS, "a.png", "ann", "x" * (MAX_NOTE_CHARS + 1)), "at most"),
        (lambda s: s.add_note(DS, "", "ann", "text"), "image path"),
        (lambda s: s.add_note("", "a.png", "ann", "text"), "dataset"),
        (lambda s: s.add_tag(DS, "a.png", " ", "ann"), "empty"),
        (lambda s: s.add_tag(DS, "a.png", "t" * 51, "ann"), "at most"),
        (lambda s: s.add_tag(DS, "a.png", "ambiguous", ""), "name"),
        (lambda s: s.set_tags(DS, "a.png", ["ok", ""], "ann"), "empty"),
        (lambda s: s.delete_note(1, ""), "name"),
    ],
)
def test_validation_errors(
    store: NotesStore, call: Callable[[NotesStore], object], message: str
) -> None:
    store.add_note(DS, "a.png", "ann", "existing")
    with pytest.raises(ValueError, match=message) as info:
        call(store)
    assert isinstance(info.value, NotesValidationError)
    assert store.notes(DS, "a.png")[0].text == "existing" and store.tags(DS, "a.png") == set()
    assert len(store.notes(DS, "a.png")) == 1


def test_longest_allowed_note_is_accepted(store: NotesStore) -> None:
    text = "x" * MAX_NOTE_CHARS
    assert store.add_note(DS, "a.png", "ann", text).text == text
