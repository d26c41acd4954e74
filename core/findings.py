"""Findings: what a team decided about a model ("the model reads the corner mark"), pinned
from the evidence that showed it, with a status and an owner.

A finding lives in the notes database (:class:`~core.notes.NotesStore`) under the same rules
as notes: every operation is its own transaction on its own connection, every edit is a new
version (the history is never overwritten), deleting only marks it, and a write that fails
raises :class:`FindingSaveError` carrying the draft, with the database unchanged. It holds up
to :data:`MAX_PATHS` image paths (relative to the dataset root) and the count of the rest.

``dataset`` is the key notes use (:func:`core.data.datasets.dataset_key`), ``link`` a relative
dashboard URL back to the view (``analysis?model=...``), ``context`` a small JSON object about
the evidence (a cell and its filter, a pattern and its verdict, a slice's conditions...).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from core.notes import (
    MAX_NOTE_CHARS,
    NotesError,
    NotesPermissionError,
    NotesStore,
    NotesValidationError,
    _author,
    _now,
)

__all__ = [
    "EDITABLE",
    "KINDS",
    "MAX_CONTEXT_CHARS",
    "MAX_PATHS",
    "MAX_TITLE_CHARS",
    "STATUSES",
    "Finding",
    "FindingSaveError",
    "FindingsStore",
]

KINDS: tuple[str, ...] = ("cell", "pattern", "slice", "map selection", "image")
STATUSES: tuple[str, ...] = ("open", "confirmed", "fixed", "won't fix")
MAX_PATHS = 50  # images a finding holds; it counts the rest
MAX_TITLE_CHARS = 200
MAX_LINK_CHARS = 4_000
MAX_CONTEXT_CHARS = 20_000
EDITABLE = ("title", "text", "status", "owner", "ticket", "link", "paths", "total", "context")

_SELECT = (
    "SELECT f.id, f.dataset, f.model, f.kind, v.title, v.text, v.status, v.owner, v.ticket,"
    " v.link, v.paths, v.more, v.context, f.author, f.created, v.editor, v.updated, v.version"
    " FROM findings f JOIN finding_versions v ON v.finding = f.id"
)
_INSERT_VERSION = (
    "INSERT INTO finding_versions (finding, version, title, text, status, owner, ticket, link,"
    " paths, more, context, editor, updated) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


class FindingSaveError(NotesError):
    """A finding could not be saved; nothing was written. ``draft`` holds what was to be
    saved (the fields given), so a form can keep it and try again."""

    def __init__(self, message: str, draft: Mapping[str, Any]) -> None:
        super().__init__(message)
        self.draft = dict(draft)


@dataclass(frozen=True)
class Finding:
    """One version of a finding (the current one unless read from :meth:`history`)."""

    id: int
    dataset: str
    model: str
    kind: str
    title: str
    text: str
    status: str
    owner: str
    ticket: str
    link: str
    paths: tuple[str, ...]
    more: int  # images beyond ``paths``
    context: dict[str, Any] = field(compare=False)
    author: str
    created: str  # UTC ISO 8601, when it was pinned
    editor: str  # who wrote this version
    updated: str  # when this version was written
    version: int  # 1 for the version pinned

    @property
    def images(self) -> int:
        """How many images the finding is about (those held and the rest)."""
        return len(self.paths) + self.more

    @property
    def ticket_url(self) -> str:
        """The ticket as a link target if it is an http(s) URL, else '' (shown as text)."""
        return self.ticket if urlsplit(self.ticket).scheme in ("http", "https") else ""


class FindingsStore:
    """Findings in the database of ``notes`` (which decides read-only and failure handling)."""

    def __init__(self, notes: NotesStore) -> None:
        self.notes = notes

    @property
    def read_only(self) -> bool:
        return self.notes.read_only

    @property
    def read_only_reason(self) -> str:
        return self.notes.read_only_reason

    def create(
        self,
        dataset: str,
        kind: str,
        title: str,
        author: str,
        *,
        model: str = "",
        text: str = "",
        status: str = "open",
        owner: str = "",
        ticket: str = "",
        link: str = "",
        paths: Sequence[str] = (),
        total: int | None = None,
        context: Mapping[str, Any] | None = None,
    ) -> Finding:
        """Pin a new finding (version 1); committed on return. ``paths`` beyond
        :data:`MAX_PATHS` are counted, not kept; ``total`` is the number of images when
        ``paths`` is only a sample of them."""
        draft: dict[str, Any] = {"dataset": dataset, "kind": kind, "title": title}
        draft["author"] = author
        draft.update(model=model, text=text, status=status, owner=owner, ticket=ticket)
        draft.update(link=link, paths=list(paths), total=total, context=dict(context or {}))
        if not isinstance(dataset, str) or not dataset:
            raise NotesValidationError(f"a finding needs a dataset, got {dataset!r}")
        if kind not in KINDS:
            raise NotesValidationError(f"unknown kind {kind!r}; kinds: {', '.join(KINDS)}")
        author = _author(author)
        fields = _fields(draft)
        now = _now()
        with self._writing(draft) as conn:
            cursor = conn.execute(
                "INSERT INTO findings (dataset, model, kind, author, created, version)"
                " VALUES (?, ?, ?, ?, ?, 1)",
                (dataset, str(model or ""), kind, author, now),
            )
            finding_id = cursor.lastrowid
            assert finding_id is not None
            conn.execute(_INSERT_VERSION, (finding_id, 1, *fields, author, now))
        return self.get(finding_id)

    def update(
        self, finding_id: int, editor: str, *, base_version: int | None = None, **changes: Any
    ) -> Finding:
        """Write a new version with ``changes`` (any of :data:`EDITABLE`) applied; the
        previous versions stay in :meth:`history`. With ``base_version`` (the version the
        editor started from), an edit made meanwhile by someone else is refused with
        :class:`FindingSaveError` rather than silently replaced."""
        unknown = sorted(set(changes) - set(EDITABLE))
        if unknown:
            raise NotesValidationError(f"a finding has no field {', '.join(unknown)}")
        draft = {"id": finding_id, "editor": editor, **changes}
        editor = _author(editor)
        now = _now()
        with self._writing(draft) as conn:
            current = _current(conn, finding_id)
            if base_version is not None and current.version != base_version:
                raise FindingSaveError(
                    f"finding {finding_id} was changed by {current.editor} at {current.updated} "
                    f"(version {current.version}) after you opened it; nothing was saved. Your "
                    "text is kept: reload the finding, merge and save again.",
                    draft,
                )
            merged = {name: getattr(current, name) for name in EDITABLE if name != "total"}
            merged["total"] = current.images
            if "paths" in changes and "total" not in changes:
                merged["total"] = None
            merged.update(changes)
            version = current.version + 1
            conn.execute(_INSERT_VERSION, (finding_id, version, *_fields(merged), editor, now))
            conn.execute("UPDATE findings SET version = ? WHERE id = ?", (version, finding_id))
        return self.get(finding_id)

    def delete(self, finding_id: int, author: str) -> None:
        """Mark ``author``'s own finding deleted (kept in the file with its history)."""
        author = _author(author)
        with self._writing({"id": finding_id, "delete": True}) as conn:
            current = _current(conn, finding_id)
            if current.author != author:
                raise NotesPermissionError(
                    f"finding {finding_id} was pinned by {current.author!r}; only its author "
                    "can delete it"
                )
            conn.execute(
                "UPDATE findings SET deleted = ?, deleted_by = ? WHERE id = ?",
                (_now(), author, finding_id),
            )

    def get(self, finding_id: int) -> Finding:
        """The current version of a finding; :class:`NotesError` if there is none."""
        if not 0 < finding_id < 2**63:  # SQLite's integers
            raise NotesError(f"there is no finding {finding_id}")
        with self.notes.transaction() as conn:
            if not _has_findings(conn):
                raise NotesError(f"there is no finding {finding_id}")
            return _current(conn, finding_id)

    def findings(
        self,
        dataset: str | None = None,
        *,
        status: str | Iterable[str] | None = None,
        owner: str | Iterable[str] | None = None,
        model: str | None = None,
        newest_first: bool = True,
    ) -> list[Finding]:
        """Current findings (deleted ones left out), filtered by dataset, status(es), owner(s)
        ('' for unassigned) and model (those pinned without a model match any)."""
        where, args = ["f.version = v.version", "f.deleted IS NULL"], []
        if dataset is not None:
            where.append("f.dataset = ?")
            args.append(dataset)
        if model is not None:
            where.append("f.model IN (?, '')")
            args.append(model)
        for column, wanted in (("v.status", status), ("v.owner", owner)):
            if wanted is not None:
                values = [wanted] if isinstance(wanted, str) else list(wanted)
                where.append(f"{column} IN ({', '.join('?' * len(values)) or 'NULL'})")
                args.extend(values)
        order = "DESC" if newest_first else "ASC"
        query = f"{_SELECT} WHERE {' AND '.join(where)} ORDER BY f.id {order}"
        with self.notes.transaction() as conn:
            if not _has_findings(conn):
                return []
            return [_finding(row) for row in conn.execute(query, args).fetchall()]

    def history(self, finding_id: int) -> list[Finding]:
        """Every version of a finding, oldest first (also of a deleted one)."""
        query = f"{_SELECT} WHERE f.id = ? ORDER BY v.version"
        with self.notes.transaction() as conn:
            rows = conn.execute(query, (finding_id,)).fetchall() if _has_findings(conn) else []
        if not rows:
            raise NotesError(f"there is no finding {finding_id}")
        return [_finding(row) for row in rows]

    def owners(self, dataset: str | None = None) -> list[str]:
        """The owners of current findings (sorted; for a filter's options)."""
        return sorted({f.owner for f in self.findings(dataset) if f.owner})

    def _writing(self, draft: Mapping[str, Any]) -> _Writing:
        return _Writing(self.notes, draft)


class _Writing:
    """A write transaction whose failure (read-only, full disk, busy) becomes
    :class:`FindingSaveError` carrying the draft; validation errors pass unchanged."""

    def __init__(self, notes: NotesStore, draft: Mapping[str, Any]) -> None:
        self.notes, self.draft = notes, draft
        self._context: Any = None

    def __enter__(self) -> sqlite3.Connection:
        try:
            self._context = self.notes.transaction(write=True)
            return self._context.__enter__()  # type: ignore[no-any-return]
        except (NotesValidationError, FindingSaveError):
            raise
        except NotesError as exc:
            raise FindingSaveError(_unsaved(exc), self.draft) from exc

    def __exit__(self, kind: Any, exc: Any, traceback: Any) -> None:
        """Rolls back on any error; a refusal raised by the block itself (no such finding,
        not its author, a conflict) passes unchanged, a failure of the database does not."""
        try:
            self._context.__exit__(kind, exc, traceback)
        except NotesError as error:
            if error is exc or isinstance(error, NotesValidationError):
                raise
            raise FindingSaveError(_unsaved(error), self.draft) from error


def _unsaved(exc: NotesError) -> str:
    return f"the finding was not saved: {exc}"


def _has_findings(conn: sqlite3.Connection) -> bool:
    """Whether the database has the findings tables (a read-only older one may not)."""
    found = conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'findings'").fetchone()
    return found is not None


def _current(conn: sqlite3.Connection, finding_id: int) -> Finding:
    row = conn.execute(
        f"{_SELECT} WHERE f.id = ? AND f.version = v.version AND f.deleted IS NULL",
        (finding_id,),
    ).fetchone()
    if row is None:
        raise NotesError(f"there is no finding {finding_id}")
    return _finding(row)


def _finding(row: Sequence[Any]) -> Finding:
    values = list(row)
    values[10] = tuple(json.loads(values[10]))
    values[12] = json.loads(values[12])
    return Finding(*values)


def _fields(draft: Mapping[str, Any]) -> tuple[Any, ...]:
    """The validated editable fields, in the column order of ``finding_versions`` (title ...
    context); raises :class:`NotesValidationError` naming the first bad one."""
    title = _text(draft["title"], "title", MAX_TITLE_CHARS, required=True)
    text = _text(draft.get("text", ""), "text", MAX_NOTE_CHARS)
    status = draft.get("status", "open")
    if status not in STATUSES:
        raise NotesValidationError(f"unknown status {status!r}; statuses: {', '.join(STATUSES)}")
    owner = _text(draft.get("owner", ""), "owner", 100).strip()
    ticket = _text(draft.get("ticket", ""), "ticket", MAX_LINK_CHARS).strip()
    link = _link(draft.get("link", ""))
    paths, more = _paths(draft.get("paths", ()), draft.get("total"))
    context = json.dumps(dict(draft.get("context") or {}), ensure_ascii=False, default=str)
    if len(context) > MAX_CONTEXT_CHARS:
        raise NotesValidationError(f"a finding's context is at most {MAX_CONTEXT_CHARS:,} chars")
    return title, text, status, owner, ticket, link, json.dumps(paths), more, context


def _text(value: Any, what: str, limit: int, required: bool = False) -> str:
    if not isinstance(value, str):
        raise NotesValidationError(f"a finding's {what} must be text, got {type(value).__name__}")
    if required and not value.strip():
        raise NotesValidationError(f"a finding needs a {what}")
    if len(value) > limit:
        raise NotesValidationError(
            f"the {what} has {len(value):,} characters; at most {limit:,} are kept"
        )
    return value


def _link(value: Any) -> str:
    """A relative dashboard URL (no scheme, no host): it is joined to wherever the dashboard
    runs, and can never point a reader elsewhere."""
    link = _text(value, "link", MAX_LINK_CHARS).strip()
    parts = urlsplit(link)
    if parts.scheme or parts.netloc or link.startswith(("//", "\\")):
        raise NotesValidationError(f"a finding's link must be a relative dashboard URL: {link!r}")
    return link


def _paths(paths: Any, total: Any) -> tuple[list[str], int]:
    if isinstance(paths, str) or not all(isinstance(p, str) and p for p in paths):
        raise NotesValidationError("a finding's images are a list of image paths")
    kept = list(dict.fromkeys(paths))  # in order, each once
    count = len(kept) if total is None else int(total)
    if count < len(kept):
        raise NotesValidationError(f"a finding of {count} images cannot hold {len(kept)}")
    return kept[:MAX_PATHS], count - min(len(kept), MAX_PATHS)
