"""Pin as finding: a button wherever the dashboard shows evidence (a cell with its filter, a
pattern with its verdict, a slice, a Map selection, one image) that saves what it shows as a
finding (:mod:`core.findings`): title, text, status, owner, ticket, the author, a deep link
back to the view and its images (up to 50, and the count of the rest).

The button opens a popover built only while open, so a page of pattern cards costs one
button each. The form is prefilled from the evidence. A read-only server, a notes database
that cannot be written or no author name disable it, and its tooltip says why. A save that
fails keeps the typed text (refilled from :attr:`FindingSaveError.draft`, kept in the session
even when the popover is closed) and says why; pressing Pin again retries.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import numpy as np
import pandas as pd
import streamlit as st

from core import Results, UserFacingError
from core.data.datasets import dataset_key
from core.findings import MAX_PATHS, MAX_TITLE_CHARS, STATUSES, FindingSaveError, FindingsStore
from core.notes import NotesError
from dashboard.parts.notes import author
from dashboard.state import resources
from dashboard.state.settings import settings
from dashboard.state.view_state import ViewState

if TYPE_CHECKING:
    from core.analysis.patterns import Pattern
    from dashboard.parts.page import ProjectView
    from dashboard.state.slicing import SliceFilter

__all__ = [
    "FIELDS",
    "FINDINGS_PAGE",
    "Pin",
    "cell_pin",
    "current_page",
    "dashboard_base",
    "deep_link",
    "disabled_reason",
    "findings_link",
    "findings_store",
    "image_pin",
    "map_pin",
    "pattern_pin",
    "pattern_pin_button",
    "pin_button",
    "slice_pin",
]

FINDINGS_PAGE = "findings"  # the Findings page's url_path
FIELDS = ("title", "text", "status", "owner", "ticket")  # what the pin form edits


@dataclass(frozen=True)
class Pin:
    """What a pin saves besides the typed fields: the evidence, prefilled title and link."""

    kind: str  # one of core.findings.KINDS
    title: str
    link: str  # a relative dashboard URL back to the view
    paths: Sequence[str]  # the images, at most MAX_PATHS kept
    total: int  # how many images the evidence holds
    context: Mapping[str, Any] = field(default_factory=dict)


def findings_store(config_path: str) -> FindingsStore:
    """The findings in the server's notes database."""
    return FindingsStore(resources.notes_store(config_path, settings().read_only))


def disabled_reason(store: FindingsStore) -> str:
    """Why this session cannot pin or edit findings ('' when it can)."""
    if settings().read_only:
        return "Read-only server: findings are shown, not pinned or edited."
    if store.read_only:
        return store.read_only_reason or "The notes database cannot be written."
    if not author():
        return "Type your name in the sidebar to pin or edit a finding."
    return ""


def current_page() -> str:
    """The url_path of the page running ('' for the default page, or a page run alone)."""
    from streamlit.runtime.scriptrunner import get_script_run_ctx

    ctx = get_script_run_ctx()
    if ctx is None:
        return ""
    manager = ctx.pages_manager
    info = manager.get_pages().get(manager.current_page_script_hash)
    return str(info.get("url_pathname", "") or "") if info else ""


def deep_link(params: Mapping[str, str] | None = None, page: str | None = None) -> str:
    """A relative link to ``page`` (default: this one) with ``params`` (default: this URL's
    query parameters): ``patterns?model=...``, or ``./?model=...`` for the default page."""
    page = current_page() if page is None else page
    query = urlencode(dict(st.query_params.to_dict() if params is None else params))
    return (page or ".") + ("/" if not page else "") + (f"?{query}" if query else "")


def findings_link(view: ViewState, finding: int | None = None) -> str:
    """A relative link to the Findings page of the view's dataset (and one finding)."""
    params = {"model": view.model, "dataset": view.dataset}
    if finding is not None:
        params["finding"] = str(finding)
    return deep_link(params, FINDINGS_PAGE)


def dashboard_base() -> str:
    """The dashboard's address as the browser sees it (its root, without the page's path;
    '' when unknown, e.g. in a test), for the report's links."""
    url = (st.context.url or "").rstrip("/")
    page = current_page()
    if page and url.endswith("/" + page):
        url = url[: -len(page) - 1]
    return url if url.startswith(("http://", "https://")) else ""


# ------------------------------------------------------------------------------ the button


def pin_button(
    pin: Pin | Callable[[], Pin],
    *,
    config_path: str,
    view: ViewState,
    key: str,
    label: str = "Pin as finding",
) -> None:
    """The Pin-as-finding button and its form (``pin`` may be a callable: it is called only
    while the popover is open)."""
    try:
        store = findings_store(config_path)
        reason = disabled_reason(store)
    except UserFacingError as exc:
        store, reason = None, f"Findings are unavailable: {exc}"
    icon = ":material/push_pin:"
    if reason:
        st.popover(label, icon=icon, disabled=True, help=reason, key=f"{key}:off")
        return
    box = st.popover(
        label,
        icon=icon,
        help="Save what this shows as a finding, with its images and a link back here",
        key=key,
        on_change="rerun",
    )
    if not box.open or store is None:
        return
    with box:
        _form(pin() if callable(pin) else pin, store, config_path, view, key)


def _form(pin: Pin, store: FindingsStore, config_path: str, view: ViewState, key: str) -> None:
    state = st.session_state
    signature = f"{pin.kind}|{pin.title}|{pin.link}"
    if state.get(f"{key}:for") != signature:  # other evidence: start from its prefill
        state[f"{key}:for"] = signature
        for name in FIELDS:
            state.pop(f"{key}:{name}", None)
        state.pop(f"{key}:done", None)
    draft = state.get(f"{key}:draft") or {}
    defaults = {"title": pin.title, "text": "", "status": "open", "owner": "", "ticket": ""}
    for name in FIELDS:  # absent after the popover was closed: a failed save's draft, or new
        if f"{key}:{name}" not in state:
            value = draft.get(name, defaults[name])
            state[f"{key}:{name}"] = value if name != "status" or value in STATUSES else "open"
    done = state.get(f"{key}:done")
    if done:
        st.success(f"Pinned as finding #{done}. [Open it]({findings_link(view, done)})")
    with st.form(f"{key}:form", border=False):
        st.text_input("Title", key=f"{key}:title", max_chars=MAX_TITLE_CHARS)
        st.text_area("What it shows", key=f"{key}:text", height=100)
        left, right = st.columns(2)
        left.selectbox("Status", STATUSES, key=f"{key}:status")
        right.text_input("Owner", key=f"{key}:owner", max_chars=100)
        st.text_input("Ticket (optional link or ID)", key=f"{key}:ticket")
        held = min(len(pin.paths), MAX_PATHS)
        images = f"{pin.total:,} image" + ("" if pin.total == 1 else "s")
        kept = f" (the first {held} kept)" if pin.total > held else ""
        st.caption(f"{pin.kind} · {images}{kept} · links back to this view · by {author()}")
        st.form_submit_button(
            "Pin", type="primary", on_click=_save, args=(pin, store, config_path, view, key)
        )
    error = state.get(f"{key}:error")
    if error:
        st.error(f"{error} Your text is kept in the form: press Pin to try again.")


def _save(pin: Pin, store: FindingsStore, config_path: str, view: ViewState, key: str) -> None:
    """Create the finding; on failure keep the draft and the reason in the session."""
    state = st.session_state
    values = {name: state.get(f"{key}:{name}", "") for name in FIELDS}
    try:
        notes_key = dataset_key(resources.project(config_path).dataset(view.dataset))
        found = store.create(
            notes_key,
            pin.kind,
            str(values["title"]),
            author(),
            model=view.model,
            text=str(values["text"]),
            status=str(values["status"]),
            owner=str(values["owner"]),
            ticket=str(values["ticket"]),
            link=pin.link,
            paths=list(pin.paths),
            total=max(int(pin.total), len(pin.paths)),
            context=dict(pin.context),
        )
    except FindingSaveError as exc:  # nothing written: keep what was typed
        state[f"{key}:error"] = str(exc)
        state[f"{key}:draft"] = exc.draft
        for name in FIELDS:
            if name in exc.draft:
                state[f"{key}:{name}"] = exc.draft[name]
        return
    except (NotesError, ValueError) as exc:  # e.g. an empty title: the form keeps the text
        state[f"{key}:error"] = f"The finding was not saved: {exc}"
        return
    for name in ("error", "draft"):
        state.pop(f"{key}:{name}", None)
    state[f"{key}:done"] = found.id
    for name in ("text", "owner", "ticket"):  # ready for the next one; the title stays
        state[f"{key}:{name}"] = ""
    state[f"{key}:status"] = "open"


# ------------------------------------------------------------------------- the evidence


def _paths(result: Results, manifest_rows: np.ndarray) -> list[str]:
    rows = np.asarray(manifest_rows, np.int64)[:MAX_PATHS]
    return [str(p) for p in result.manifest.column("path").take(rows).to_pylist()]


def cell_pin(
    view: ViewState,
    result: Results,
    rows: pd.DataFrame,
    pattern: int | None = None,
    flt: SliceFilter | None = None,
) -> Pin:
    """The selected cell as the gallery shows it: its rows (sorted, filtered by tag, pattern
    and slice), the first 50 kept."""
    assert view.cell is not None
    true, pred = view.cell
    names = result.classes
    title = f"true {names[true]} → predicted {names[pred]}"
    context: dict[str, Any] = {"cell": [true, pred], "true": names[true], "pred": names[pred]}
    context.update(images=len(rows), sort=view.sort)
    if view.tag:
        title += f", tagged “{view.tag}”"
        context["tag"] = view.tag
    if pattern:
        title += f", pattern {pattern}"
        context["pattern"] = pattern
    if flt is not None:
        labels = [c.label() for c in flt.slice.conditions]
        title += f", slice {' · '.join(labels)}"
        context.update(where=flt.param, slice=labels)
    if st.query_params.get("labels") == "corrected":
        context["labels"] = "corrected"
    paths = [str(p) for p in rows["path"].head(MAX_PATHS)]
    return Pin("cell", title, deep_link(), paths, len(rows), context)


def pattern_pin(view: ViewState, result: Results, pattern: Pattern) -> Pin:
    """A pattern with its place, score and, once tested, its verdict; links to its images."""
    names = result.classes
    true, pred = names[pattern.true], names[pattern.pred]
    verdict = _verdict(result, pattern)
    x, y = pattern.centroid
    context: dict[str, Any] = {
        "cell": [pattern.true, pattern.pred],
        "true": true,
        "pred": pred,
        "pattern": pattern.cluster,
        "rank": pattern.rank + 1,
        "score": round(float(pattern.score), 3),
        "flagged": bool(pattern.flagged),
        "images": pattern.images,
        "cell_images": pattern.cell_images,
        "centroid": [round(float(x), 3), round(float(y), 3)],
    }
    if verdict:
        context["verdict"] = verdict
    title = f"Pattern {pattern.cluster} of true {true} → predicted {pred}"
    params = {"model": view.model, "dataset": view.dataset}
    params.update(cell=f"{pattern.true},{pattern.pred}", pattern=str(pattern.cluster))
    link = deep_link(params, "")
    return Pin("pattern", title, link, _paths(result, pattern.rows), pattern.images, context)


def pattern_pin_button(
    config_path: str, view: ViewState, result: Results, pattern: Pattern, where: str = "grid"
) -> None:
    """The pin of a pattern card (``where``: "grid" on the Patterns page, "strip" in a cell)."""
    pin_button(
        partial(pattern_pin, view, result, pattern),
        config_path=config_path,
        view=view,
        key=f"pin:{where}:{pattern.rank + 1}",
        label="Pin as finding" if where == "grid" else "Pin",
    )


def _verdict(result: Results, pattern: Pattern) -> str:
    """The stored causal test's verdict of ``pattern``, with its rates ('' if never tested)."""
    try:
        from core.analysis.causal import pattern_subject, stored_verdict

        found = stored_verdict(result, pattern_subject(result, pattern))
    except Exception:  # no verdict module, nothing stored, or it cannot be read: no verdict
        return ""
    if found is None:
        return ""
    return (
        f"{found.verdict}: transplant flips {found.transplant.rate:.2f} vs "
        f"{found.transplant_control.rate:.2f} (control), erasing recovers "
        f"{found.erase.rate:.2f} vs {found.erase_control.rate:.2f}"
    )


def slice_pin(project: ProjectView, result: Results, flt: SliceFilter) -> Pin:
    """The slice: its conditions and counts; its images, errors first."""
    positions = np.flatnonzero(flt.positions)
    wrong = result.true[positions] != result.pred[positions]
    order = positions[np.argsort(~wrong, kind="stable")]
    labels = [c.label() for c in flt.slice.conditions]
    errors = int(wrong.sum())
    context = {"where": flt.param, "slice": labels, "images": len(positions), "errors": errors}
    if len(positions):
        context["accuracy"] = round(1 - errors / len(positions), 4)
    title = f"Slice {' · '.join(labels)}: {errors:,} of {len(positions):,} wrong"
    paths = _paths(result, result.index[order])
    return Pin("slice", title, deep_link(), paths, len(positions), context)


def map_pin(result: Results, rows: pd.DataFrame) -> Pin:
    """A Map selection (its shape from the URL) and its images as listed, errors first."""
    wrong = int((rows["true"] != rows["pred"]).sum())
    context = {"selection": st.query_params.get("sel", ""), "images": len(rows), "wrong": wrong}
    title = f"Map selection: {len(rows):,} images, {wrong:,} wrong"
    paths = [str(p) for p in rows["path"].head(MAX_PATHS)]
    return Pin("map selection", title, deep_link(), paths, len(rows), context)


def image_pin(row: pd.Series, names: Sequence[str]) -> Pin:
    """One image with its labels and probabilities."""
    path = str(row["path"])
    true, pred = names[int(row["true"])], names[int(row["pred"])]
    context = {
        "path": path,
        "true": true,
        "pred": pred,
        "confidence": round(float(row["confidence"]), 4),
        "true_prob": round(float(row["true_prob"]), 4),
    }
    title = f"{path}: true {true}, predicted {pred}"
    return Pin("image", title, deep_link(), [path], 1, context)
