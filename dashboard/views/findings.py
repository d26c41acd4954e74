"""Findings: what the team pinned from the evidence, shared by everyone on the server.

The dataset's findings in a table, filtered by status and owner (``status``, ``owner`` in the
URL; ``owner=-`` for unassigned). Selecting one opens it (``finding=ID``): its text, status,
owner and ticket are editable (every save is a new version; the history is shown, a save
that meets someone else's edit is refused and keeps the typed text), its images are cards with
the maps of their predicted and true class, its deep link goes back to the view it was pinned
from, and its images can be exported for relabelling. **Download report** writes the session's
report (``core.report``) as one self-contained HTML file, made when clicked.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import numpy as np
import pandas as pd
import streamlit as st

from core import Results, UserFacingError
from core.analysis.gallery import page_count, page_rows
from core.corrections import evaluated_positions, manifest_rows
from core.data.datasets import dataset_key
from core.findings import (
    MAX_PATHS,
    MAX_TITLE_CHARS,
    STATUSES,
    Finding,
    FindingSaveError,
    FindingsStore,
)
from core.notes import NotesError
from dashboard.parts.findings import dashboard_base, disabled_reason, findings_store
from dashboard.parts.gallery import gallery_page
from dashboard.parts.notes import author, author_input
from dashboard.parts.page import error_panel, evaluation_or_stop, project_view
from dashboard.parts.relabel import relabel_export
from dashboard.parts.sidebar import model_and_dataset
from dashboard.state import resources
from dashboard.state.settings import settings
from dashboard.state.url import bind, set_params
from dashboard.state.view_state import ViewState

UNASSIGNED = "-"  # the owner filter's value for findings without an owner
FIELDS = ("title", "text", "status", "owner", "ticket")


def main() -> None:
    server = settings()
    project = project_view()
    config_path, view = project.config_path, project.view
    with st.sidebar:
        model_and_dataset(project, ("finding", "page"))
    author_input(server)
    st.title("Findings")
    try:
        store = findings_store(config_path)
        notes_key = dataset_key(project.config.dataset(view.dataset))
        every = store.findings(notes_key)
    except UserFacingError as exc:
        error_panel("Findings cannot be read", exc)
        st.stop()
    result = evaluation_or_stop(config_path, view)
    status, owner = _filters(every)
    shown = [f for f in every if _matches(f, status, owner)]
    with st.container(horizontal=True, vertical_alignment="bottom"):
        bind(
            st.selectbox,
            "Status",
            "status",
            status,
            ["", *STATUSES],
            ("page",),
            format_func=lambda s: s or "(any status)",
        )
        owners = sorted({f.owner for f in every if f.owner} | ({owner} - {"", UNASSIGNED}))
        bind(
            st.selectbox,
            "Owner",
            "owner",
            owner,
            ["", *owners, UNASSIGNED],
            ("page",),
            format_func=lambda o: {"": "(anyone)", UNASSIGNED: "(unassigned)"}.get(o, o),
        )
        _report_button(config_path, view, result, store, notes_key)
    if store.read_only_reason:
        st.caption(store.read_only_reason)
    _table(every, shown, view)
    chosen = _chosen()
    if chosen is not None:
        st.divider()
        _finding(config_path, view, result, store, notes_key, chosen)


def _filters(every: list[Finding]) -> tuple[str, str]:
    """The URL's status ('' for any; an unknown one is ignored) and owner ('' for anyone)."""
    status = st.query_params.get("status", "")
    owner = st.query_params.get("owner", "")[:100]
    return (status if status in STATUSES else ""), owner


def _matches(finding: Finding, status: str, owner: str) -> bool:
    if status and finding.status != status:
        return False
    if owner == UNASSIGNED:
        return not finding.owner
    return not owner or finding.owner == owner


def _chosen() -> int | None:
    """The finding the URL opens (None: none, or not a number)."""
    try:
        number = int(st.query_params.get("finding", ""))
    except ValueError:
        return None
    return number if 0 < number < 2**63 else None  # SQLite's integers


def _report_button(
    config_path: str, view: ViewState, result: Results, store: FindingsStore, notes_key: str
) -> None:
    data = resources.dataset(config_path, view.dataset, view.model)
    make = partial(
        _report, result, data, store, notes_key, view.model, view.dataset, dashboard_base()
    )
    st.download_button(
        "Download report",
        make,  # made when clicked: a report reads every finding's images and maps
        file_name=f"report_{view.model}_{view.dataset}.html".replace(" ", "_"),
        mime="text/html",
        type="primary",
        icon=":material/description:",
        on_click="ignore",
        help="One HTML file that opens offline: the model and dataset, the matrix, every "
        "finding with its images and maps, the top patterns, the worst slices, tagged images",
    )


def _report(
    result: Results,
    data: Any,
    store: FindingsStore,
    notes_key: str,
    model: str,
    dataset: str,
    base: str,
) -> str:
    """The report as HTML (or a page that says why it could not be made)."""
    from html import escape

    from core.report import ReportInputs, report_html

    inputs = ReportInputs(
        result, data, store.notes, notes_key, model, dataset, dashboard_url=base, compute=False
    )
    try:
        return report_html(inputs)
    except Exception as exc:  # the download must say why, not fail silently
        return f"<!doctype html><title>No report</title><p>The report failed: {escape(str(exc))}"


def _table(every: list[Finding], shown: list[Finding], view: ViewState) -> None:
    if not every:
        st.info(
            "No finding yet. Pin one with **Pin as finding** beside a cell's images, a pattern, "
            "a slice, a Map selection or one image."
        )
        return
    st.caption(f"{len(shown)} of {len(every)} findings of *{view.dataset}*")
    if not shown:
        return
    table = pd.DataFrame(
        {
            "id": [f.id for f in shown],
            "title": [f.title for f in shown],
            "status": [f.status for f in shown],
            "owner": [f.owner for f in shown],
            "kind": [f.kind for f in shown],
            "images": [f.images for f in shown],
            "author": [f.author for f in shown],
            "pinned": [f.created[:16].replace("T", " ") for f in shown],
            "model": [f.model for f in shown],
        }
    )
    key = f"findings-table-{'-'.join(str(f.id) for f in shown)[:200]}"
    st.dataframe(
        table,
        key=key,
        on_select=partial(_on_row, key, table),
        selection_mode="single-row",
        hide_index=True,
        width="stretch",
    )
    st.caption("Select a row to open the finding.")


def _on_row(key: str, table: pd.DataFrame) -> None:
    rows = st.session_state[key].selection.rows
    if rows:
        set_params({"finding": str(int(table.iloc[rows[0]]["id"]))}, reset=("page",))


# ----------------------------------------------------------------------------- one finding


def _finding(
    config_path: str,
    view: ViewState,
    result: Results,
    store: FindingsStore,
    notes_key: str,
    number: int,
) -> None:
    try:
        finding = store.get(number)
    except NotesError:
        st.info(f"There is no finding {number} (it was deleted, or the link is wrong).")
        return
    if finding.dataset != notes_key:
        st.warning(f"Finding {number} is about another dataset: choose it in the sidebar.")
        return
    st.subheader(f"#{finding.id} · {finding.title}")
    pinned = finding.created[:16].replace("T", " ")
    model = f" under {finding.model}" if finding.model else ""
    edited = (
        f" · version {finding.version} by {finding.editor}, "
        f"{finding.updated[:16].replace('T', ' ')} UTC"
        if finding.version > 1
        else ""
    )
    st.caption(f"{finding.kind} · pinned by {finding.author}, {pinned} UTC{model}{edited}")
    links = []
    if finding.link:
        links.append(f"[Open the view it was pinned from]({_safe(finding.link)})")
    if finding.ticket_url:
        links.append(f"ticket: [{_plain(finding.ticket)}]({_safe(finding.ticket_url)})")
    elif finding.ticket:
        links.append(f"ticket: {_plain(finding.ticket)}")
    if links:
        st.markdown(" · ".join(links))
    reason = disabled_reason(store)
    if reason:
        st.caption(reason)
        st.text(finding.text or "(no text)")
        st.markdown(f"**Status:** {finding.status} · **owner:** {_plain(finding.owner) or '—'}")
    else:
        _editor(store, finding)
    _history(store, finding)
    _images(config_path, view, result, finding)


def _safe(link: str) -> str:
    """A link target that cannot end a Markdown link early."""
    return "".join(
        f"%{ord(c):02X}" if c in " ()<>[]" else c for c in link
    )  # the URL is otherwise kept


def _plain(text: str) -> str:
    """Text shown in Markdown as typed (its Markdown characters escaped)."""
    return "".join(f"\\{c}" if c in "\\`*_{}[]()#+-.!|<>~$" else c for c in text)


def _editor(store: FindingsStore, finding: Finding) -> None:
    """The finding's fields in a form; a save is a new version on top of the one opened."""
    state, key = st.session_state, f"finding:{finding.id}"
    draft = state.get(f"{key}:draft") or {}
    if f"{key}:title" not in state:  # opened afresh: the current version, or a kept draft
        for name in FIELDS:
            state[f"{key}:{name}"] = draft.get(name, getattr(finding, name))
        state[f"{key}:base"] = draft.get("base", finding.version)
    saved = state.pop(f"{key}:saved", None)
    if saved:
        st.success(f"Saved as version {saved}.")
    with st.form(f"{key}:form", border=True):
        st.text_input("Title", key=f"{key}:title", max_chars=MAX_TITLE_CHARS)
        st.text_area("Text", key=f"{key}:text", height=140)
        left, middle, right = st.columns(3)
        left.selectbox("Status", STATUSES, key=f"{key}:status")
        middle.text_input("Owner", key=f"{key}:owner", max_chars=100)
        right.text_input("Ticket (link or ID)", key=f"{key}:ticket")
        st.form_submit_button(
            "Save changes", type="primary", on_click=_save, args=(store, finding.id, key)
        )
    error = state.get(f"{key}:error")
    if error:
        st.error(f"{error} Your changes are kept in the form.", icon=":material/error:")
        st.button(
            "Discard my changes and load the latest version",
            key=f"{key}:reload",
            on_click=_reload,
            args=(key,),
        )
    if finding.author == author():
        with st.popover("Delete this finding", icon=":material/delete:"):
            st.caption("It is kept in the database with its history, marked deleted.")
            st.button(
                "Delete", key=f"{key}:delete", on_click=_delete, args=(store, finding.id, key)
            )


def _save(store: FindingsStore, number: int, key: str) -> None:
    state = st.session_state
    changes = {name: state.get(f"{key}:{name}", "") for name in FIELDS}
    base = state.get(f"{key}:base")
    try:
        saved = store.update(number, author(), base_version=base, **changes)
    except FindingSaveError as exc:  # nothing written: the form keeps what was typed
        state[f"{key}:error"] = str(exc)
        state[f"{key}:draft"] = {**exc.draft, "base": base}
        return
    except (NotesError, ValueError) as exc:
        state[f"{key}:error"] = f"The finding was not saved: {exc}"
        return
    for name in ("error", "draft"):
        state.pop(f"{key}:{name}", None)
    state[f"{key}:base"] = saved.version
    state[f"{key}:saved"] = saved.version


def _reload(key: str) -> None:
    for name in (*FIELDS, "base", "draft", "error"):
        st.session_state.pop(f"{key}:{name}", None)


def _delete(store: FindingsStore, number: int, key: str) -> None:
    try:
        store.delete(number, author())
    except NotesError as exc:
        st.session_state[f"{key}:error"] = f"The finding was not deleted: {exc}"
        return
    set_params({}, reset=("finding", "page"))


def _history(store: FindingsStore, finding: Finding) -> None:
    try:
        versions = store.history(finding.id)
    except NotesError as exc:
        st.caption(f"The history cannot be read: {exc}")
        return
    with st.expander(f"History ({len(versions)} version" + ("s)" if len(versions) > 1 else ")")):
        rows = []
        previous: Finding | None = None
        for v in versions:
            changes = [
                f"{name}: {getattr(previous, name) or '—'} → {getattr(v, name) or '—'}"
                for name in ("status", "owner", "ticket", "title")
                if previous is not None and getattr(previous, name) != getattr(v, name)
            ]
            if previous is not None and previous.text != v.text:
                changes.append("text edited")
            rows.append(
                {
                    "version": v.version,
                    "by": v.editor,
                    "when (UTC)": v.updated[:19].replace("T", " "),
                    "status": v.status,
                    "owner": v.owner,
                    "changes": "; ".join(changes) if previous is not None else "pinned",
                }
            )
            previous = v
        st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")


def _images(config_path: str, view: ViewState, result: Results, finding: Finding) -> None:
    """The finding's images as cards with both maps (paged), and their export."""
    held = list(finding.paths)
    more = f"; {finding.more:,} more were not kept" if finding.more else ""
    st.markdown(f"**Images** · {len(held)} held (at most {MAX_PATHS}){more}")
    if not held:
        return
    rows = manifest_rows(result, held)
    positions = evaluated_positions(result, rows)
    found = positions[positions >= 0]
    missing = len(held) - len(found)
    if missing:
        st.caption(f"{missing} of them are not in this evaluation of *{view.dataset}*.")
    if finding.model and finding.model != view.model:
        st.caption(f"Pinned under {finding.model}; the maps shown are {view.model}'s.")
    relabel_export(
        config_path,
        view,
        result,
        lambda: held,
        f"finding_{finding.id}",
        f"finding-export:{finding.id}",
        count=len(held) - missing,
    )
    if not len(found):
        return
    table = result.predictions.iloc[np.asarray(found, np.int64)]
    pages = page_count(len(table), view.page_size)
    page = min(view.page, pages)
    if pages > 1:
        bind(st.number_input, f"Page (of {pages})", "page", page, min_value=1, max_value=pages)
    shown = page_rows(table, page, view.page_size)
    heading = f"finding {finding.id}: {len(table)} images"
    try:
        gallery, problem, _ = gallery_page(config_path, view, result, shown, heading)
    except UserFacingError as exc:
        error_panel(f"Model {view.model!r} could not be loaded, so no maps can be shown", exc)
        return
    if problem:
        st.warning(problem)
    st.html(gallery)


main()
