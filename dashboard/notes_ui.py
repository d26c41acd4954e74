"""Tags and notes on an image: badges on gallery cards, editing in the large view.

Notes render with ``st.text`` (plain text, never HTML or Markdown). The author is the login
name when authentication is on, else the name typed in the sidebar.
"""

from __future__ import annotations

import streamlit as st

from core.notes import NotesError, NotesStore, PathSummary
from dashboard.settings import Settings

__all__ = ["author", "author_input", "badge_text", "editor"]

AUTHOR_KEY = "author"


def author_input(config: Settings) -> None:
    """Sidebar: who writes (or the login name), and a log-out button when logged in."""
    if config.read_only:
        st.sidebar.caption("Read-only server: tags and notes are shown, not edited.")
        return
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
    """Tags (pick or type a new one) and notes of one image, editable unless read-only."""
    tags = sorted(store.tags(dataset, path))
    writer = author()
    editable = not store.read_only
    if editable and not writer:
        st.info("Type your name in the sidebar to tag this image or add a note.")
        editable = False
    chosen = st.multiselect(
        "Tags",
        store.all_tags(dataset),
        default=tags,
        accept_new_options=True,
        disabled=not editable,
        key=f"tags:{dataset}:{path}",
    )
    if editable and sorted(chosen) != tags:
        _write(lambda: store.set_tags(dataset, path, chosen, writer))
    st.markdown("**Notes**")
    for note in store.notes(dataset, path):
        with st.container(border=True):
            st.caption(f"{note.author} · {note.created[:16].replace('T', ' ')} UTC")
            st.text(note.text)  # plain text: never rendered as HTML or Markdown
    if editable:
        with st.form(f"note:{dataset}:{path}", clear_on_submit=True):
            text = st.text_area("Add a note", max_chars=10_000)
            if st.form_submit_button("Save note") and text.strip():
                _write(lambda: store.add_note(dataset, path, writer, text))
                st.rerun(scope="fragment")


def _write(action) -> None:  # type: ignore[no-untyped-def]
    try:
        action()
    except (NotesError, ValueError) as exc:
        st.error(str(exc))
