"""Tags and notes on images, shared by everyone using one dashboard server.

Everything lives in one SQLite database in WAL mode (the config's ``notes_db``), keyed by
dataset (its :meth:`ImageDataset.fingerprint`) and image path (relative to the dataset root).
Every operation opens, uses and closes its own connection: a store can be shared between
threads and processes, and each read sees what any writer has committed. Writes wait for the
lock (``timeout``), run in ``BEGIN IMMEDIATE`` transactions and are on disk when they return.
Deleted notes and removed tags are only marked, never erased. A file that is not a readable
notes database raises :class:`NotesError` and is never modified. The same file holds the
team's findings (:mod:`core.findings`) and corrected labels (:mod:`core.corrections`).

A bad machine: a database on a read-only (or unwritable) folder is served read-only, saying why,
and becomes writable again by itself once the folder is; a write that fails (a full disk, a
locked or read-only file) raises :class:`NotesError` saying why, and the database is unchanged.
Reads still work on a full or read-only disk (SQLite's WAL index needs a writable file; then
the database is read as an immutable file).
"""

from __future__ import annotations

import csv
import errno
import io
import os
import sqlite3
import time
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager, closing, contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import NamedTuple

from core.config import ProjectConfig
from core.errors import UserFacingError

__all__ = [
    "CSV_COLUMNS",
    "DEFAULT_TAGS",
    "MAX_AUTHOR_CHARS",
    "MAX_NOTE_CHARS",
    "MAX_TAG_CHARS",
    "SCHEMA_VERSION",
    "Note",
    "NotesError",
    "NotesPermissionError",
    "NotesStore",
    "NotesValidationError",
    "PathSummary",
]

DEFAULT_TAGS: tuple[str, ...] = ProjectConfig.tags
MAX_NOTE_CHARS = 10_000
MAX_TAG_CHARS = 50
MAX_AUTHOR_CHARS = 100
CSV_COLUMNS = ("dataset", "path", "kind", "text", "author", "timestamp")

_SQLITE_HEADER = b"SQLite format 3\x00"
#: One tuple of statements per schema version; ``PRAGMA user_version`` counts those applied.
_MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE notes (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            dataset TEXT NOT NULL, path TEXT NOT NULL, author TEXT NOT NULL,
            text TEXT NOT NULL, created TEXT NOT NULL, deleted TEXT)""",
        "CREATE INDEX notes_by_path ON notes (dataset, path) WHERE deleted IS NULL",
        """CREATE TABLE tags (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            dataset TEXT NOT NULL, path TEXT NOT NULL, tag TEXT NOT NULL,
            author TEXT NOT NULL, created TEXT NOT NULL, removed TEXT, removed_by TEXT)""",
        "CREATE UNIQUE INDEX tags_live ON tags (dataset, path, tag) WHERE removed IS NULL",
        "CREATE INDEX tags_by_tag ON tags (dataset, tag) WHERE removed IS NULL",
    ),
    (  # findings (core.findings: every version kept) and corrected labels (core.corrections)
        """CREATE TABLE findings (
            id INTEGER PRIMARY KEY AUTOINCREMENT, dataset TEXT NOT NULL, model TEXT NOT NULL,
            kind TEXT NOT NULL, author TEXT NOT NULL, created TEXT NOT NULL,
            version INTEGER NOT NULL, deleted TEXT, deleted_by TEXT)""",
        """CREATE TABLE finding_versions (
            finding INTEGER NOT NULL REFERENCES findings (id), version INTEGER NOT NULL,
            title TEXT NOT NULL, text TEXT NOT NULL, status TEXT NOT NULL, owner TEXT NOT NULL,
            ticket TEXT NOT NULL, link TEXT NOT NULL, paths TEXT NOT NULL, more INTEGER NOT NULL,
            context TEXT NOT NULL, editor TEXT NOT NULL, updated TEXT NOT NULL,
            PRIMARY KEY (finding, version))""",
        """CREATE TABLE corrections (
            id INTEGER PRIMARY KEY AUTOINCREMENT, dataset TEXT NOT NULL, path TEXT NOT NULL,
            old TEXT NOT NULL, new TEXT NOT NULL, author TEXT NOT NULL, created TEXT NOT NULL,
            source TEXT NOT NULL)""",
        "CREATE INDEX corrections_by_path ON corrections (dataset, path)",
    ),
    (  # named slices (core.saved_slices: shared by everyone on the server, like tags)
        """CREATE TABLE saved_slices (
            id INTEGER PRIMARY KEY AUTOINCREMENT, dataset TEXT NOT NULL, name TEXT NOT NULL,
            slice TEXT NOT NULL, author TEXT NOT NULL, created TEXT NOT NULL, removed TEXT,
            removed_by TEXT)""",
        "CREATE UNIQUE INDEX saved_slices_live ON saved_slices (dataset, name)"
        " WHERE removed IS NULL",
    ),
)
SCHEMA_VERSION = len(_MIGRATIONS)


class NotesError(UserFacingError):
    """The notes database cannot be used (unreadable, not a notes database, busy...)."""


class NotesValidationError(NotesError, ValueError):
    """A note, tag or author name was rejected (empty, too long...)."""


class NotesPermissionError(NotesError, PermissionError):
    """A write to a read-only store, or deleting someone else's note."""


@dataclass(frozen=True)
class Note:
    """One free-text note on one image; ``created`` is UTC ISO 8601."""

    id: int
    dataset: str
    path: str
    author: str
    text: str
    created: str


class PathSummary(NamedTuple):
    """What an image carries, for badges: its number of notes and its tags."""

    n_notes: int
    tags: frozenset[str]


class NotesStore:
    """Tags and notes in the SQLite file ``path`` (created with its folder unless read-only)."""

    def __init__(
        self,
        path: str | Path,
        *,
        read_only: bool = False,
        default_tags: Iterable[str] = DEFAULT_TAGS,
        timeout: float = 30.0,
    ) -> None:
        self.path = Path(path).expanduser().absolute()
        self.served_read_only = read_only
        self.default_tags = tuple(default_tags)
        self.timeout = timeout
        self.unwritable = "" if read_only else _unwritable(self.path)
        self._checked = time.monotonic()
        try:
            self._prepare()
        except NotesError:  # a full disk cannot create or migrate it: read-only until it can
            if read_only or self.unwritable or _free_bytes(self.path.parent) >= _ROOM:
                raise
            self.unwritable = f"{_full_text(self.path.parent)} Until then they are read-only."
            self._prepare()

    @property
    def read_only(self) -> bool:
        """Whether tags and notes cannot be edited: served read-only, or the database cannot be
        written (see :attr:`read_only_reason`). A store that fell back to read-only checks its
        folder again (at most once a second) and is writable again once the folder is."""
        if self.served_read_only:
            return True
        if self.unwritable and time.monotonic() - self._checked >= 1.0:
            self._checked = time.monotonic()
            if not _unwritable(self.path):
                self.unwritable = ""
                try:
                    self._prepare()
                except NotesError as exc:
                    self.unwritable = str(exc)
        return bool(self.unwritable)

    @property
    def read_only_reason(self) -> str:
        """Why tags and notes cannot be edited, in one line ('' when they can)."""
        if self.served_read_only:
            return "Read-only server: tags and notes are shown, not edited."
        return self.unwritable if self.read_only else ""

    # -- notes -----------------------------------------------------------------------------

    def add_note(self, dataset: str, path: str, author: str, text: str) -> Note:
        """Store ``text`` verbatim as ``author``'s note on ``path``; committed on return."""
        dataset, path = _key(dataset, path)
        author, text = _author(author), _note_text(text)
        created = _now()
        with self._transaction(write=True) as conn:
            cursor = conn.execute(
                "INSERT INTO notes (dataset, path, author, text, created) VALUES (?, ?, ?, ?, ?)",
                (dataset, path, author, text, created),
            )
        assert cursor.lastrowid is not None
        return Note(cursor.lastrowid, dataset, path, author, text, created)

    def notes(self, dataset: str, path: str) -> list[Note]:
        """The notes on ``path``, oldest first (deleted ones left out)."""
        dataset, path = _key(dataset, path)
        with self._transaction() as conn:
            rows = conn.execute(
                "SELECT id, dataset, path, author, text, created FROM notes"
                " WHERE dataset = ? AND path = ? AND deleted IS NULL ORDER BY id",
                (dataset, path),
            ).fetchall()
        return [Note(*row) for row in rows]

    def delete_note(self, note_id: int, author: str) -> None:
        """Mark ``author``'s own note deleted (kept in the file); others' notes are refused."""
        author = _author(author)
        with self._transaction(write=True) as conn:
            row = conn.execute(
                "SELECT author, deleted FROM notes WHERE id = ?", (note_id,)
            ).fetchone()
            if row is None:
                raise NotesError(f"there is no note {note_id}")
            if row[0] != author:
                raise NotesPermissionError(
                    f"note {note_id} was written by {row[0]!r}; only its author can delete it"
                )
            if row[1] is None:
                conn.execute("UPDATE notes SET deleted = ? WHERE id = ?", (_now(), note_id))

    # -- tags ------------------------------------------------------------------------------

    def add_tag(self, dataset: str, path: str, tag: str, author: str) -> bool:
        """Tag ``path``; False if it already had the tag."""
        dataset, path = _key(dataset, path)
        tag, author = _tag(tag), _author(author)
        with self._transaction(write=True) as conn:
            return _insert_tag(conn, dataset, path, tag, author)

    def remove_tag(self, dataset: str, path: str, tag: str, author: str) -> bool:
        """Remove a tag from ``path`` (kept in the file, marked removed); False if absent."""
        dataset, path = _key(dataset, path)
        tag, author = _tag(tag), _author(author)
        with self._transaction(write=True) as conn:
            return _remove_tag(conn, dataset, path, tag, author)

    def set_tags(self, dataset: str, path: str, tags: Iterable[str], author: str) -> set[str]:
        """Make ``tags`` exactly the tags of ``path`` in one transaction; returns them."""
        dataset, path = _key(dataset, path)
        wanted, author = {_tag(t) for t in tags}, _author(author)
        with self._transaction(write=True) as conn:
            current = _live_tags(conn, dataset, path)
            for tag in current - wanted:
                _remove_tag(conn, dataset, path, tag, author)
            for tag in wanted - current:
                _insert_tag(conn, dataset, path, tag, author)
        return wanted

    def tags(self, dataset: str, path: str) -> set[str]:
        """The tags on ``path``."""
        dataset, path = _key(dataset, path)
        with self._transaction() as conn:
            return _live_tags(conn, dataset, path)

    def paths_with_tag(self, dataset: str, tag: str) -> set[str]:
        """The paths of ``dataset`` carrying ``tag``."""
        with self._transaction() as conn:
            rows = conn.execute(
                "SELECT path FROM tags WHERE dataset = ? AND tag = ? AND removed IS NULL",
                (dataset, tag.strip()),
            ).fetchall()
        return {row[0] for row in rows}

    def all_tags(self, dataset: str) -> list[str]:
        """The default tags, then every other tag in use on ``dataset`` (sorted)."""
        with self._transaction() as conn:
            rows = conn.execute(
                "SELECT DISTINCT tag FROM tags WHERE dataset = ? AND removed IS NULL", (dataset,)
            ).fetchall()
        used = {row[0] for row in rows} - set(self.default_tags)
        return list(dict.fromkeys(self.default_tags)) + sorted(used)

    # -- summaries and export --------------------------------------------------------------

    def counts_by_path(
        self, dataset: str, paths: Iterable[str] | None = None
    ) -> dict[str, PathSummary]:
        """Notes count and tags of each path with any (only those in ``paths`` if given)."""
        with self._transaction() as conn:
            counts = conn.execute(
                "SELECT path, count(*) FROM notes WHERE dataset = ? AND deleted IS NULL"
                " GROUP BY path",
                (dataset,),
            ).fetchall()
            tagged = conn.execute(
                "SELECT path, tag FROM tags WHERE dataset = ? AND removed IS NULL", (dataset,)
            ).fetchall()
        tags: dict[str, set[str]] = {}
        for path, tag in tagged:
            tags.setdefault(path, set()).add(tag)
        n_notes = dict(counts)
        wanted = set(paths) if paths is not None else set(n_notes) | set(tags)
        return {
            p: PathSummary(n_notes.get(p, 0), frozenset(tags.get(p, ())))
            for p in wanted
            if p in n_notes or p in tags
        }

    def export_csv(self, dataset: str | None = None, dest: str | Path | None = None) -> str:
        """CSV of every live note and tag (of ``dataset``, or all), one per row; see CSV_COLUMNS.

        Also written to ``dest`` when given. Texts are verbatim: a spreadsheet opening the file
        may treat a cell starting with ``=`` as a formula.
        """
        query = (
            "SELECT dataset, path, 'note', text, author, created, id FROM notes"
            " WHERE deleted IS NULL AND (?1 IS NULL OR dataset = ?1)"
            " UNION ALL SELECT dataset, path, 'tag', tag, author, created, id FROM tags"
            " WHERE removed IS NULL AND (?1 IS NULL OR dataset = ?1)"
            " ORDER BY 1, 2, 3, 7"
        )
        with self._transaction() as conn:
            rows = conn.execute(query, (dataset,)).fetchall()
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(CSV_COLUMNS)
        writer.writerows(row[:6] for row in rows)
        text = buffer.getvalue()
        if dest is not None:
            Path(dest).write_text(text, encoding="utf-8", newline="")
        return text

    # -- connections -----------------------------------------------------------------------

    def transaction(self, write: bool = False) -> AbstractContextManager[sqlite3.Connection]:
        """One transaction on a new connection, under the rules above, for the stores that
        share this database (:mod:`core.findings`, :mod:`core.corrections`)."""
        return self._transaction(write)

    def _prepare(self) -> None:
        """Check the file is a notes database; unless read-only, create or migrate it."""
        _check_header(self.path)
        read_only = self.served_read_only or bool(self.unwritable)
        if read_only and not self.path.exists():
            return
        with self._connection(write=not read_only) as conn:
            self._check_contents(conn)
            if read_only:
                return
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise NotesError(f"{self.path}: cannot switch the notes database to WAL mode")
            conn.execute("BEGIN IMMEDIATE")
            version = self._check_contents(conn)
            for statements in _MIGRATIONS[version:]:
                for statement in statements:
                    conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            conn.execute("COMMIT")

    def _check_contents(self, conn: sqlite3.Connection) -> int:
        """The schema version, after checking the file is an intact notes database."""
        problems = [row[0] for row in conn.execute("PRAGMA quick_check").fetchall()]
        if problems != ["ok"]:
            raise NotesError(self._unusable(f"damaged ({'; '.join(problems[:3])})"))
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        if version > SCHEMA_VERSION:
            raise NotesError(self._unusable(f"written by a newer version (schema {version})"))
        if version == 0 and conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]:
            raise NotesError(self._unusable("an SQLite database of something else"))
        return version

    def _unusable(self, why: str) -> str:
        return (
            f"the notes database {self.path} is {why}; it was left untouched. Move it aside "
            "(a new one is then created) or set notes_db in the config to another file."
        )

    @contextmanager
    def _connection(self, write: bool = False) -> Iterator[sqlite3.Connection]:
        """A new connection, closed afterwards; SQLite errors become :class:`NotesError`."""
        try:
            with closing(self._open(write)) as conn:
                yield conn
        except sqlite3.OperationalError as exc:
            if "locked" in str(exc) or "busy" in str(exc):
                raise NotesError(
                    f"the notes database {self.path} stayed busy for {self.timeout:g} s; try again"
                ) from exc
            problem = self._disk_problem(exc)
            if problem:
                raise NotesError(problem) from exc
            raise NotesError(self._unusable(f"unusable ({exc})")) from exc
        except sqlite3.DatabaseError as exc:
            raise NotesError(self._unusable(f"unreadable ({exc})")) from exc

    def _open(self, write: bool) -> sqlite3.Connection:
        """A connection; to read, one that works on a full or read-only disk too (where SQLite
        cannot make its WAL index, the file is read as immutable)."""
        conn = None
        try:
            conn = self._connect()
            if not write:
                conn.execute("SELECT count(*) FROM sqlite_master").fetchone()  # the WAL index
            return conn
        except sqlite3.OperationalError as exc:
            if conn is not None:
                conn.close()
            if write or not self.path.exists() or not self._disk_problem(exc):
                raise
            return self._connect(immutable=True)

    def _disk_problem(self, exc: sqlite3.Error) -> str:
        """Why an operation failed if the disk is at fault (full, read-only), else ''."""
        folder = self.path.parent
        free = _free_bytes(folder)
        name = str(getattr(exc, "sqlite_errorname", ""))
        disk = name.startswith(("SQLITE_IOERR", "SQLITE_CANTOPEN")) and free < _ROOM
        if name.startswith("SQLITE_FULL") or "disk is full" in str(exc) or disk:
            return _full_text(folder)
        why = _unwritable(self.path)
        if why and not self.served_read_only:  # fall back to read-only until it is writable
            self.unwritable, self._checked = why, time.monotonic()
        return why

    def _connect(self, immutable: bool = False) -> sqlite3.Connection:
        if immutable:  # only to read, where SQLite cannot write its WAL index
            uri = f"{self.path.as_uri()}?mode=ro&immutable=1"
            return sqlite3.connect(uri, uri=True, timeout=self.timeout, isolation_level=None)
        if not (self.served_read_only or self.unwritable):
            conn = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None)
            try:
                conn.execute("PRAGMA synchronous=FULL")
            except sqlite3.Error:
                conn.close()  # never left open (a read-only remount waits for open files)
                raise
            return conn
        if self.path.exists():
            uri = f"{self.path.as_uri()}?mode=ro"
            return sqlite3.connect(uri, uri=True, timeout=self.timeout, isolation_level=None)
        conn = sqlite3.connect(":memory:", isolation_level=None)  # no database yet: no notes
        for statements in _MIGRATIONS:
            for statement in statements:
                conn.execute(statement)
        return conn

    @contextmanager
    def _transaction(self, write: bool = False) -> Iterator[sqlite3.Connection]:
        """A connection inside one transaction, committed if the block succeeds."""
        if write and self.read_only:
            raise NotesPermissionError(
                self.unwritable
                or f"notes and tags are read-only here (the notes database {self.path} "
                "is served read-only)"
            )
        with self._connection(write) as conn:
            conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            try:
                yield conn
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")


def _live_tags(conn: sqlite3.Connection, dataset: str, path: str) -> set[str]:
    rows = conn.execute(
        "SELECT tag FROM tags WHERE dataset = ? AND path = ? AND removed IS NULL",
        (dataset, path),
    ).fetchall()
    return {row[0] for row in rows}


def _insert_tag(conn: sqlite3.Connection, dataset: str, path: str, tag: str, author: str) -> bool:
    cursor = conn.execute(
        "INSERT OR IGNORE INTO tags (dataset, path, tag, author, created) VALUES (?, ?, ?, ?, ?)",
        (dataset, path, tag, author, _now()),
    )
    return cursor.rowcount == 1


def _remove_tag(conn: sqlite3.Connection, dataset: str, path: str, tag: str, author: str) -> bool:
    cursor = conn.execute(
        "UPDATE tags SET removed = ?, removed_by = ?"
        " WHERE dataset = ? AND path = ? AND tag = ? AND removed IS NULL",
        (_now(), author, dataset, path, tag),
    )
    return cursor.rowcount == 1


def _unwritable(path: Path) -> str:
    """Why the notes database ``path`` cannot be written or created ('' if it can): its folder
    cannot be made, is read-only or unwritable, or the file is."""
    folder = path.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return _read_only_text(path, f"its folder cannot be created ({exc.strerror or exc})")
    exists = path.exists()
    target = path if exists else folder
    try:
        read_only_fs = bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except OSError:
        read_only_fs = False
    if read_only_fs:
        return _read_only_text(path, f"{folder} is on a read-only file system")
    if not os.access(target, os.W_OK):
        return _read_only_text(path, f"{target} is not writable ({os.strerror(errno.EACCES)})")
    if exists and not os.access(folder, os.W_OK):  # SQLite writes a journal beside the file
        return _read_only_text(path, f"{folder} is not writable")
    return ""


def _read_only_text(path: Path, why: str) -> str:
    action = "written" if path.exists() else "created"
    return (
        f"The notes database {path} cannot be {action}: {why}. Tags and notes are shown "
        "read-only; to edit them, make that folder writable or set notes_db in the config "
        "to a writable file."
    )


_ROOM = 64 * 1024  # less free space than this, and a failed SQLite write means a full disk


def _full_text(folder: Path) -> str:
    return (
        f"The disk holding {folder} is full ({_free_bytes(folder):,} bytes free): the notes "
        "database cannot be written, so nothing was saved. Free space and try again."
    )


def _free_bytes(folder: Path) -> int:
    try:
        stats = os.statvfs(folder)
    except OSError:
        return 0
    return stats.f_bavail * stats.f_frsize


def _check_header(path: Path) -> None:
    """Refuse a non-empty file that is not SQLite before SQLite opens (and might touch) it."""
    try:
        with path.open("rb") as handle:
            head = handle.read(len(_SQLITE_HEADER))
    except FileNotFoundError:
        return
    except OSError as exc:
        raise NotesError(f"cannot read the notes database {path}: {exc}") from None
    if head and head != _SQLITE_HEADER:
        raise NotesError(
            f"{path} is not an SQLite database (so not a notes database); it was left "
            "untouched. Move it aside or set notes_db in the config to another file."
        )


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _key(dataset: str, path: str) -> tuple[str, str]:
    for what, value in (("dataset", dataset), ("image path", path)):
        if not isinstance(value, str) or not value:
            raise NotesValidationError(f"a note or tag needs a {what}, got {value!r}")
    return dataset, path


def _author(author: str) -> str:
    name = author.strip() if isinstance(author, str) else ""
    if not name:
        raise NotesValidationError("enter your name first: notes and tags record their author")
    if len(name) > MAX_AUTHOR_CHARS:
        raise NotesValidationError(f"author names are at most {MAX_AUTHOR_CHARS} characters")
    return name


def _note_text(text: str) -> str:
    if not isinstance(text, str) or not text.strip():
        raise NotesValidationError("the note is empty")
    if len(text) > MAX_NOTE_CHARS:
        raise NotesValidationError(
            f"the note has {len(text):,} characters; notes are at most {MAX_NOTE_CHARS:,}"
        )
    return text


def _tag(tag: str) -> str:
    name = tag.strip() if isinstance(tag, str) else ""
    if not name:
        raise NotesValidationError("a tag cannot be empty")
    if len(name) > MAX_TAG_CHARS:
        raise NotesValidationError(f"tags are at most {MAX_TAG_CHARS} characters, got {name!r}")
    return name
