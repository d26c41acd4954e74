"""Tags and notes on an image: badges on gallery cards, editing in the large view.

Notes render with ``st.text`` (plain text, never HTML or Markdown). The author is the login
name when authentication is on, else the name typed in the sidebar.
"""

from __future__ import annotations

import streamlit as st

from core.notes import NotesError, NotesStore, PathSummary
from dashboard.state import resources
from dashboard.state.settings import Settings

__all__ = ["AUTHOR_KEY", "author", "author_input", "badge_text", "editor"]

AUTHOR_KEY = "author"


def author_input(config: Settings) -> None:
    """Sidebar: who writes (or the login name), and a log-out button when logged in; says why
    when the notes database cannot be written (e.g. a read-only folder)."""
    if config.read_only:
        st.sidebar.caption("Read-only server: tags and notes are shown, not edited.")
        return
    try:
        store = resources.notes_store(str(config.config), config.read_only)
    except NotesError as exc:
        st.sidebar.caption(f"Tags and notes are unavailable: {exc}")
        return
    if store.read_only:
        st.sidebar.caption(store.read_only_reason)
    if config.login and st.user.get("is_logged_in", False):
        st.sidebar.caption(f"Signed in as **{author()}**")
        st.sidebar.button("Log out", on_click=st.logout)
        return
    st.sidebar.text_input("Your name (for tags and notes)", key=AUTHOR_KEY, max_chars=80)


def author() -> str:
    """The current writer's name ('' when unknown)."""
    if st.user.get("is_logged_in", False):
        return str(st.user.get("name") or st.user.get("email") or "")
    return str(st.session_state.get(AUTHOR_KEY, "")).strip()


def badge_text(summary: PathSummary | None) -> str:
    """One line of plain text: the image's tags and its number of notes ('' if none).

    Words, not emoji: the page's fonts (DejaVu in the set-up command) have no emoji glyphs.
    """
    if summary is None:
        return ""
    parts = [f"tags: {', '.join(sorted(summary.tags))}"] if summary.tags else []
    if summary.n_notes:
        parts.append(f"{summary.n_notes} note" + ("s" if summary.n_notes > 1 else ""))
    return " · ".join(parts)


def editor(store: NotesStore, dataset: str, path: str) -> None:
    """Tags (pick or type a new one) and notes of one image, editable unless read-only.

    A note or tag that cannot be saved (a full disk, a locked or read-only database) is never
    lost: the typed text stays in its box, the page says why, and a button tries again.
    """
    try:
        tags = sorted(store.tags(dataset, path))
        known, notes = store.all_tags(dataset), store.notes(dataset, path)
    except NotesError as exc:
        st.error(f"Tags and notes cannot be read: {exc}")
        return
    writer = author()
    editable = not store.read_only
    if not editable and store.read_only_reason:
        st.info(store.read_only_reason)
    elif not writer:
        st.info("Type your name in the sidebar to tag this image or add a note.")
        editable = False
    key = f"{dataset}:{path}"
    chosen = st.multiselect(
        "Tags",
        list(dict.fromkeys([*known, *st.session_state.get(f"tags:{key}", [])])),
        default=tags,
        accept_new_options=True,
        disabled=not editable,
        key=f"tags:{key}",
    )
    saving = editable and sorted(chosen) != tags  # a failed save is tried on every rerun
    if saving and not _write(lambda: store.set_tags(dataset, path, chosen, writer), "The tags"):
        st.button("Retry saving the tags", key=f"retry-tags:{key}")
    st.markdown("**Notes**")
    for note in notes:
        with st.container(border=True):
            st.caption(f"{note.author} · {note.created[:16].replace('T', ' ')} UTC")
            st.text(note.text)  # plain text: never rendered as HTML or Markdown
    if not editable:
        return
    text_key, error_key = f"note-text:{key}", f"note-error:{key}"
    with st.form(f"note:{key}", clear_on_submit=False):
        st.text_area("Add a note", max_chars=10_000, key=text_key)
        st.form_submit_button(
            "Save note", on_click=_save_note, args=(store, dataset, path, writer, key)
        )
    failed = st.session_state.get(error_key)
    if failed:
        st.error(f"{failed} Your note is kept in the box above.", icon=":material/error:")
        st.button(
            "Retry saving the note",
            key=f"retry-note:{key}",
            on_click=_save_note,
            args=(store, dataset, path, writer, key),
        )


def _save_note(store: NotesStore, dataset: str, path: str, writer: str, key: str) -> None:
    """Save the typed note; empty the box only once it is saved, else keep it and say why."""
    text_key, error_key = f"note-text:{key}", f"note-error:{key}"
    text = str(st.session_state.get(text_key, ""))
    if not text.strip():
        return
    try:
        store.add_note(dataset, path, writer, text)
    except (NotesError, ValueError) as exc:
        st.session_state[error_key] = f"The note was not saved: {exc}"
        return
    st.session_state[text_key] = ""
    st.session_state.pop(error_key, None)


def _write(action, what: str) -> bool:  # type: ignore[no-untyped-def]
    try:
        action()
    except (NotesError, ValueError) as exc:
        st.error(f"{what} were not saved: {exc}", icon=":material/error:")
        return False
    return True
