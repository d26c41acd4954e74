"""Suspected label errors: cleanlab's flagged images, most suspect first, with both maps.

Each card shows the image, the map of the predicted (suggested) class and of the given label,
and both probabilities; two buttons tag it "label error" or "label ok" in the shared notes.
Nothing is relabelled. Model, dataset and page live in the URL.
"""

from __future__ import annotations

import streamlit as st

from core import UserFacingError
from core.analysis.gallery import class_maps, page_count
from core.data.datasets import dataset_key
from core.errors import reason_of
from core.explain.map_cache import Unavailable
from core.notes import NotesError
from dashboard.parts.gallery import card_html
from dashboard.parts.notes import author, author_input, badge_text
from dashboard.parts.page import evaluation_or_stop, project_view
from dashboard.parts.relabel import relabel_export
from dashboard.parts.sidebar import model_and_dataset
from dashboard.parts.slice_bar import slice_bar
from dashboard.state import analyses, resources
from dashboard.state.settings import settings
from dashboard.state.url import bind

PAGE_SIZE = 12
TAGS = ("label error", "label ok")


def main() -> None:
    server = settings()
    project = project_view()
    config, config_path, view = project.config, project.config_path, project.view
    with st.sidebar:
        model_and_dataset(project, ("page",))
        bind(st.selectbox, "Maps", "method", view.method, ["Grad-CAM", "Grad-CAM++", "Saliency"])
    author_input(server)
    st.title("Suspected label errors")
    result = evaluation_or_stop(config_path, view)
    flt = slice_bar(project, result)
    with st.spinner(f"Finding suspected label errors in {len(result.index):,} images…"):
        flags = analyses.quality(config_path, view.model, view.dataset, result.fingerprint)
    rows = analyses.arrays(result)
    ranked = flags.ranked_issues()
    total = len(flags)
    if flt is not None:  # the slice's flagged images, in the same order
        ranked, total = ranked[flt.positions[ranked]], flt.images
    st.caption(
        f"cleanlab's `find_label_issues` flags **{len(ranked)} of {total}** images of "
        f"*{view.dataset}*{' in the slice' if flt is not None else ''} under *{view.model}*; "
        "most suspect first (lowest probability of the "
        "given label). Confirm with the buttons: they only tag the image, nothing is relabelled."
    )
    if flags.unsaved:
        st.caption(
            f"Kept in memory while the server runs (computed again after a restart): "
            f"{flags.unsaved}"
        )
    if not len(ranked):
        st.success("No image looks mislabelled to this model.")
        return
    relabel_export(  # every flagged image (of the slice), most suspect first
        config_path,
        view,
        result,
        lambda: [str(p) for p in rows.paths[ranked]],
        f"label_errors_{view.dataset}".replace(" ", "_"),
        "labels-export",
        count=len(ranked),
    )
    pages = page_count(len(ranked), PAGE_SIZE)
    page = min(view.page, pages)
    if pages > 1:
        bind(st.number_input, f"Page (of {pages})", "page", page, min_value=1, max_value=pages)
    shown = ranked[(page - 1) * PAGE_SIZE : page * PAGE_SIZE]
    dataset = resources.dataset(config_path, view.dataset, view.model)
    paths = [str(p) for p in rows.paths[shown]]
    pairs = [(int(flags.suggested[i]), int(rows.true[i])) for i in shown]
    try:  # stored results open without the model: it is loaded here, for the maps
        model = resources.model(config_path, view.model)
        _, layer = resources.layers(config_path, view.model)
        maps = class_maps(
            model, dataset, paths, pairs, view.method, layer, resources.map_cache(),
            result.fingerprint,
        )  # fmt: skip
    except (ValueError, UserFacingError) as exc:
        st.warning(f"{view.method} cannot be computed for this model: {exc}")
        maps = [[None, None] for _ in shown]
    store = resources.notes_store(config_path, server.read_only)
    notes = dataset_key(config.dataset(view.dataset))
    summaries = store.counts_by_path(notes, paths)
    names = result.classes
    probs = result.probs(result.predictions["index"].to_numpy()[shown])
    columns = st.columns(2)
    for n, (i, path, row_maps) in enumerate(zip(shown, paths, maps, strict=True)):
        given, suggested = int(rows.true[i]), int(flags.suggested[i])
        try:
            if isinstance(row_maps, Unavailable):
                raise OSError(row_maps.reason)
            urls = resources.panel_cache().panels(dataset, path, list(row_maps), view.opacity)
        except Exception as exc:  # the file changed or vanished since the evaluation
            urls = []
            st.warning(f"{path} cannot be shown ({reason_of(exc)})")
        caption = (
            f"#{(page - 1) * PAGE_SIZE + n + 1} · given {names[given]} ({rows.true_prob[i]:.1%})",
            f" · suggested {names[suggested]} ({probs[n][suggested]:.1%}) · "
            f"score {flags.self_confidence[i]:.4f}",
        )
        labels = (
            "image",
            f"{view.method} · predicted {names[suggested]}",
            f"{view.method} · given {names[given]}",
        )
        with columns[n % 2].container(border=False):
            badges = badge_text(summaries.get(path))
            st.html(card_html(path, caption, zip(urls, labels, strict=False), badges))
            _tag_buttons(store, notes, path)


def _tag_buttons(store, notes: str, path: str) -> None:  # type: ignore[no-untyped-def]
    writer = author()
    disabled = store.read_only or not writer
    left, right = st.columns(2)
    for column, tag in zip((left, right), TAGS, strict=True):
        if column.button(
            tag,
            key=f"tag:{tag}:{path}",
            disabled=disabled,
            help="Type your name in the sidebar first" if not writer else None,
            width="stretch",
        ):
            other = TAGS[1 - TAGS.index(tag)]
            try:
                store.set_tags(notes, path, (store.tags(notes, path) - {other}) | {tag}, writer)
            except NotesError as exc:  # a full disk, a locked or read-only database
                st.error(f"“{tag}” was not saved: {exc} Press the button again to retry.")
                return
            st.rerun()


main()
