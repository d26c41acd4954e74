"""Page pieces: error panel, sidebar summary, the selected cell's gallery and its large view."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import partial
from html import escape
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import streamlit as st
from PIL import Image

from core import ImageDataset, Results, UserFacingError, accuracy, cell_rows
from core.analysis.gallery import (
    compared_classes,
    page_count,
    page_maps,
    page_rows,
    sort_rows,
    stored_maps,
    stored_size,
    uses_stored_maps,
)
from core.config import ProjectConfig
from core.data.datasets import dataset_key
from core.errors import reason_of
from core.notes import NotesStore, PathSummary
from dashboard import analyses, pattern_views, resources, trust
from dashboard.notes_ui import badge_text, editor
from dashboard.settings import settings
from dashboard.url import bind
from dashboard.view_state import METHODS, PAGE_SIZES, SORTS, ViewState, parse_view

if TYPE_CHECKING:  # torch and the CAM code load when a cell is opened, not for the matrix
    from streamlit.delta_generator import DeltaGenerator

    from core.explain.cam import LayerInfo
    from core.explain.map_cache import Unavailable


def error_panel(title: str, exc: BaseException) -> None:
    """A clear, specific message; the rest of the app keeps working."""
    st.error(f"**{title}.** {exc}", icon=":material/error:")


def evaluation_or_stop(config_path: str, view: ViewState) -> Results:
    """The view's evaluation (a spinner while it runs), or its error panel and the page stops."""
    try:
        with st.spinner("Evaluating…"):
            return resources.evaluation(config_path, view.model, view.dataset)
    except UserFacingError as exc:
        error_panel(f"Cannot evaluate {view.model!r} on {view.dataset!r}", exc)
        st.stop()


@dataclass(frozen=True)
class ProjectView:
    """The server's project and the view a page's URL asks for."""

    config_path: str
    config: ProjectConfig
    view: ViewState
    models: list[str]
    datasets: list[str]  # those of the view's model


def project_view() -> ProjectView:
    """Load the project config (or say why it cannot be loaded and stop the page) and read the
    view from the URL; its dataset is one of its model's, else that model's first."""
    config_path = str(settings().config)
    try:
        config = resources.project(config_path)
    except UserFacingError as exc:
        error_panel("The project config could not be loaded", exc)
        st.stop()
    models = [m.name for m in config.models]
    params = st.query_params.to_dict()
    view = parse_view(params, models, [d.name for d in config.datasets])
    datasets = config.datasets_for(view.model)
    return ProjectView(config_path, config, parse_view(params, models, datasets), models, datasets)


def sidebar_summary(result: Results) -> None:
    """Accuracy, counts and the files that could not be read."""
    table = result.predictions
    errors = int((table["true"] != table["pred"]).sum())
    with st.sidebar:
        st.metric("Accuracy", f"{accuracy(table):.2%}")
        # two counts a row: three left ~70 px each, too narrow for "1.0M" at the metric's size
        images, wrong = st.columns(2)
        images.metric("Images", compact_count(len(table)))
        wrong.metric("Errors", compact_count(errors))
        st.caption(f"{len(table):,} images · {errors:,} errors · {len(result.skipped):,} skipped")
        for note in result.notes:
            st.warning(note, icon=":material/difference:")
        if result.skipped:
            with st.expander(f"{len(result.skipped):,} unreadable file(s) skipped"):
                shown = result.skipped[:200]
                st.text("\n".join(f"{s.path}: {s.reason}" for s in shown))
                if len(result.skipped) > len(shown):
                    st.caption(f"… and {len(result.skipped) - len(shown):,} more (see the CLI)")


def compact_count(n: int) -> str:
    """A count that fits a narrow metric: 999, 5.0k, 99.9k, 100k, 1.2M."""
    if n < 1_000:
        return str(n)
    for size, suffix in ((1_000_000_000, "B"), (1_000_000, "M"), (1_000, "k")):
        if n >= size:
            value = n / size
            return f"{value:.1f}{suffix}" if value < 100 else f"{value:.0f}{suffix}"
    return str(n)  # unreachable


GALLERY_SETTINGS_OPEN = "gallery-settings-open"  # the folded settings' state (session state)


def gallery_settings(config_path: str, view: ViewState, result: Results) -> None:
    """Sidebar: how every cell's gallery is drawn (method, layer, opacity) and ordered.

    These live outside the matrix fragment: a click on a cell does not redraw them, which
    keeps a click cheap for the browser when many people share the server. They are folded
    (a caption says what is in use) and built only while open: a new visitor's first page
    then draws one expander instead of four selectboxes and a slider, whose code the browser
    would otherwise load and start (0.8 s of a page load on 2 cores; ``bench/scale.py``).
    They are drawn while the model still loads (the layer the stored maps were made at stands
    for its layer list until the next rerun), so the page never reruns by itself.
    """
    ready = resources.model_ready(config_path, view.model)
    if ready:
        layers, layer = _layer_choice(config_path, view)
    else:
        layers, layer = [], view.layer or result.meta.get("map_layer")
    with st.sidebar:
        if ready:
            from core.data.models import describe_preprocessing

            loaded = resources.model(config_path, view.model)
            st.caption(f"Preprocessing: {describe_preprocessing(loaded.spec)}")
            for note in loaded.warnings:
                st.caption(note)
        st.header("Gallery")
        at = f" at layer {layer}" if layer is not None else ""
        st.caption(
            f"{view.method}{at} · opacity {view.opacity:g} · {SORTS[view.sort][2]} · "
            f"{view.page_size} per page"
        )
        box = st.expander("Gallery settings", key=GALLERY_SETTINGS_OPEN, on_change="rerun")
        if not box.open:
            return
    labels = {info.name: _layer_label(info) for info in layers}
    with box:
        bind(st.selectbox, "Method", "method", view.method, list(METHODS))
        if layer is not None and ready:
            scores = trust.layer_labels(config_path, view)  # starts their pass if need be
            labels = {name: text + scores.get(name, "") for name, text in labels.items()}
            bind(st.selectbox, "Target layer", "layer", layer, list(labels), format_func=labels.get)
            trust.layer_caption(config_path, view, layer)
        elif not ready:
            st.selectbox("Target layer", [layer or "(default)"], disabled=True)
            st.caption("The model is loading: its layers are listed once it has loaded.")
            _list_layers_when_loaded(config_path, view.model)
        bind(st.slider, "Overlay opacity", "opacity", view.opacity, min_value=0.0, max_value=1.0)
        cols = st.columns([3, 2])
        with cols[0]:
            bind(
                st.selectbox,
                "Sort by",
                "sort",
                view.sort,
                list(SORTS),
                ("page",),
                format_func=lambda s: SORTS[s][2],
            )
        with cols[1]:
            bind(st.selectbox, "Per page", "page_size", view.page_size, list(PAGE_SIZES), ("page",))


@st.fragment(run_every=1.0)
def _list_layers_when_loaded(config_path: str, model: str) -> None:
    """While the gallery settings are open and the model loads: every second, and once it has
    loaded, the page again, with the layer list (the settings are only open when someone is
    using them, so this rerun does not land on a click elsewhere; never with a dialog open)."""
    if resources.model_ready(config_path, model) and not st.session_state.get(trust.DIALOG_OPEN):
        st.rerun(scope="app")


@st.fragment
def cell_view(
    config_path: str, models: Sequence[str], datasets: Sequence[str], result: Results
) -> None:
    """Heading, tag filter, page, picker, download and the paged gallery of the selected cell.

    A fragment: paging and the tag filter rerun only this part of the page. The view is read
    from the URL here, because a fragment rerun keeps the arguments of the last full run.
    Everything is computed before the first element is sent, so the browser receives the
    cell's elements in one burst and draws the page once, not once per slow step.
    """
    view = parse_view(st.query_params.to_dict(), models, datasets, result.num_classes)
    if "inspect-path" not in st.session_state:  # no dialog opens in this run
        st.session_state.pop(trust.DIALOG_OPEN, None)
    if view.cell is None:
        return
    true, pred = view.cell
    names = result.classes
    column, ascending, _ = SORTS[view.sort]
    rows = sort_rows(
        cell_rows(_with_scores(config_path, view, result), true, pred), column, ascending
    )
    store = resources.notes_store(config_path, settings().read_only)
    notes_key = dataset_key(resources.project(config_path).dataset(view.dataset))
    if view.tag:
        rows = rows[rows["path"].isin(store.paths_with_tag(notes_key, view.tag))]
    of_cell, chosen, pattern_note = pattern_views.cell_patterns(config_path, view, result)
    if chosen is not None:
        rows = rows[rows["index"].isin(chosen.rows)]
    count = f"{len(rows):,} image" + ("" if len(rows) == 1 else "s")
    tagged = f" tagged “{view.tag}”" if view.tag else ""
    if chosen is not None:
        tagged += f" in pattern {chosen.cluster}"
    heading = f"true {names[true]} → predicted {names[pred]}: {count}{tagged}"
    subheading = f"true *{names[true]}* → predicted *{names[pred]}*: {count}{tagged}"
    stored = _stored_maps_at(result, view)
    waiting = None if stored else _waiting_for_model(config_path, view.model, subheading)
    try:  # stored results open without the model: maps to compute wait for its load
        layer, size = stored or _model_maps_at(config_path, view)
    except UserFacingError as exc:
        if waiting is not None:
            waiting.empty()
        error_panel(f"Model {view.model!r} could not be loaded, so no maps can be shown", exc)
        return
    page = page_rows(rows, view.page, view.page_size)
    strip = pattern_views.cell_strip(config_path, view, result, of_cell)
    gallery, problem, badges = _gallery_html(
        config_path, view, result, page, layer, size, store, notes_key, heading
    )
    tags = store.all_tags(notes_key)
    # ---- nothing above this line sends anything to the browser (but the loading status)
    if waiting is not None:
        waiting.empty()
    st.subheader(subheading)
    if strip:
        st.caption(
            "Patterns in this cell: groups of its images whose predicted-class maps agree "
            "(mean maps over an example image; flagged: unlikely by chance)"
        )
        st.html(strip)
    if pattern_note:
        st.caption(pattern_note)
    cols = st.columns([3, 4, 1.5, 2.5], vertical_alignment="bottom")
    with cols[0]:
        _tag_filter(view, tags)
        if of_cell:
            pattern_views.pattern_filter(of_cell, chosen)
    if rows.empty:
        st.info("No images in this cell.")
        return
    with cols[1]:
        _inspect_picker(config_path, view, page, names, layer)
    pages = page_count(len(rows), view.page_size)
    if pages > 1:
        with cols[2]:
            bind(
                st.number_input,
                f"Page (of {pages})",
                "page",
                min(view.page, pages),
                min_value=1,
                max_value=pages,
                step=1,
            )
    with cols[3]:
        st.download_button(
            "Download rows (CSV)",
            partial(_csv, rows, names),  # made when clicked, not on every rerun
            file_name=f"cell_{names[true]}_{names[pred]}.csv".replace(" ", "_"),
            mime="text/csv",
            help="Every image of this cell (all pages) with its probabilities and loss",
        )
    if problem:
        st.warning(problem)
    st.html(gallery)
    badges.show()  # after the cards: scored in the background, filled in when ready
    if pages > 1:
        trust.cell_median(config_path, view, result, rows, layer)


def _stored_maps_at(result: Results, view: ViewState) -> tuple[str, tuple[int, int]] | None:
    """(layer, input size) when the view's maps are the result's own (drawn without the model),
    else None."""
    size = stored_size(result)
    if size is None or not uses_stored_maps(result, view.method, view.layer or None):
        return None
    return result.meta["map_layer"], size


def _model_maps_at(config_path: str, view: ViewState) -> tuple[str | None, tuple[int, int]]:
    """(layer, input size) of maps the model computes; waits for the model's load."""
    _, layer = _layer_choice(config_path, view)
    return layer, resources.model(config_path, view.model).spec.input_size


def gallery_page(
    config_path: str, view: ViewState, result: Results, rows: pd.DataFrame, heading: str
) -> tuple[str, str | None, trust.PageBadges]:
    """Any page of cards (a selection, a chart's bar, similar images) as the cell view draws
    them: the HTML, a message when the maps cannot be computed, and the page's badges (their
    ``show()`` scores the missing ones in the background). Raises :class:`UserFacingError` when
    the maps need a model that cannot be loaded."""
    layer, size = _stored_maps_at(result, view) or _model_maps_at(config_path, view)
    store = resources.notes_store(config_path, settings().read_only)
    notes_key = dataset_key(resources.project(config_path).dataset(view.dataset))
    return _gallery_html(config_path, view, result, rows, layer, size, store, notes_key, heading)


def _waiting_for_model(config_path: str, model: str, subheading: str) -> DeltaGenerator | None:
    """None when the model is loaded; else a placeholder showing the cell's heading and a status
    that says the maps wait for the model (a cell clicked just after a fresh server's first
    page), to be emptied when the cards are ready."""
    if resources.model_ready(config_path, model):
        return None
    waiting = st.empty()
    with waiting.container():
        st.subheader(subheading)
        st.info("Loading the model for maps…", icon=":material/hourglass_top:")
    return waiting


def _with_scores(config_path: str, view: ViewState, result: Results) -> pd.DataFrame:
    """The predictions, plus the label-quality or map-faithfulness score when the gallery is
    sorted by it."""
    if SORTS[view.sort][0] == "faithfulness":
        try:
            layer = _layer_choice(config_path, view)[1]
        except UserFacingError:
            return result.predictions.assign(faithfulness=np.nan)
        scores = trust.faithfulness_column(config_path, view, result, layer)
        return result.predictions.assign(faithfulness=scores)
    if SORTS[view.sort][0] != "label_quality":
        return result.predictions
    flags = analyses.quality(config_path, view.model, view.dataset, result.fingerprint)
    return result.predictions.assign(label_quality=flags.self_confidence)


def _layer_choice(config_path: str, view: ViewState) -> tuple[list[LayerInfo], str | None]:
    """The model's candidate layers and the one in use: the URL's if valid, else the default."""
    layers, default_layer = resources.layers(config_path, view.model)
    return layers, view.layer if view.layer in {info.name for info in layers} else default_layer


def _layer_label(info: LayerInfo) -> str:
    kind = {"tokens": " (tokens)", "channels_last": " (channels last)"}.get(info.layout, "")
    return f"{info.name} · {info.type_name} · {'×'.join(str(s) for s in info.shape)}{kind}"


def _tag_filter(view: ViewState, tags: list[str]) -> None:
    options = ["", *tags] if view.tag in tags or not view.tag else ["", view.tag, *tags]
    bind(
        st.selectbox,
        "Only images tagged",
        "tag",
        view.tag,
        options,
        ("page",),
        format_func=lambda t: t or "(any image)",
    )


def _gallery_html(
    config_path: str,
    view: ViewState,
    result: Results,
    rows: pd.DataFrame,
    layer: str | None,
    size: tuple[int, int],
    store: NotesStore,
    notes_key: str,
    heading: str,
) -> tuple[str, str | None, trust.PageBadges]:
    """The page of cards as one HTML string, a message when the maps cannot be computed, and
    the page's faithfulness badges (drawn in the cards when known, else filled in later).

    The grid carries its cell's ``heading`` (``data-heading``): the heading is its own element,
    drawn a frame or two before the cards, so a reader of the page (a test) can tell the new
    cell's cards from the previous cell's.
    """
    dataset = resources.dataset(config_path, view.dataset, view.model)
    problem = None
    try:
        maps: list[list[np.ndarray | None] | Unavailable]
        if uses_stored_maps(result, view.method, layer):  # made in the evaluation: no model call
            maps = stored_maps(result, rows, size)  # type: ignore[assignment]
        else:
            model = resources.model(config_path, view.model)
            maps = page_maps(
                model, dataset, rows, view.method, layer, resources.map_cache(), result.fingerprint
            )  # type: ignore[assignment]
    except (ValueError, UserFacingError) as exc:  # e.g. classic CAM on a model without GAP head
        problem = f"{view.method} cannot be computed for this model: {exc}"
        maps = [[None, None] for _ in range(len(rows))]
    summaries = store.counts_by_path(notes_key, rows["path"]) if len(rows) else {}
    loading = resources.model_loading(config_path, view.model)  # badges wait for it, not the page
    badges = trust.PageBadges.of(
        lambda: loading.result().loaded,
        dataset,
        result,
        view.method,
        layer,
        rows,
        maps if problem is None else None,
    )
    cards = [
        _card(dataset, row, row_maps, result.classes, view, summaries.get(row["path"]), html)
        for (_, row), row_maps, html in zip(rows.iterrows(), maps, badges.html, strict=True)
    ]
    grid = f'<div class="cam-gallery" data-heading="{escape(heading)}" style="{_GRID}">'
    return f"{grid}{''.join(cards)}</div>", problem, badges


def _card(
    dataset: ImageDataset,
    row: pd.Series,
    maps: list[np.ndarray | None] | Unavailable,
    names: tuple[str, ...],
    view: ViewState,
    summary: PathSummary | None,
    map_badges: Sequence[str] = (),
) -> str:
    """One card's HTML: file name, probabilities, image and both CAM panels (each with its
    faithfulness badge), tags and notes.

    An image that cannot be read now (changed, deleted or refused since the evaluation) gets
    a short message in place of its panels; the other cards are unaffected.
    """

    from core.explain.map_cache import Unavailable

    first, second = compared_classes(row)
    diagonal = int(row["true"]) == int(row["pred"])
    problem, urls = "", ["", "", ""]
    try:
        if isinstance(maps, Unavailable):
            problem = maps.reason
        else:
            urls = resources.panel_cache().panels(dataset, row["path"], maps, view.opacity)
    except Exception as exc:  # the file changed or vanished since the evaluation
        problem = reason_of(exc)
    runner_up = f" · runner-up {names[second]} ({row['runner_up_prob']:.1%})" if diagonal else ""
    other = f"runner-up {names[second]}" if diagonal else f"true {names[second]}"
    caption = (
        f"predicted {names[first]}",
        f" ({row['confidence']:.1%}) · true {names[int(row['true'])]} "
        f"({row['true_prob']:.1%}){runner_up}",
    )
    labels = ("image", f"{view.method} · predicted {names[first]}", f"{view.method} · {other}")
    name = dataset.display_name(row["path"])
    if problem:
        return card_html(name, caption, [], badge_text(summary), f"cannot be shown: {problem}")
    return card_html(
        name,
        caption,
        zip(urls, labels, strict=True),
        badge_text(summary),
        panel_badges=["", *map_badges],
    )


def _inspect_picker(
    config_path: str, view: ViewState, rows: pd.DataFrame, names: tuple[str, ...], layer: str | None
) -> None:
    """One picker for the large view (instead of a button per card: fewer elements to draw)."""
    key = "inspect-pick"
    paths = list(rows["path"])
    st.selectbox(
        "Inspect an image: any class, layer activations, tags and notes",
        paths,
        index=None,
        placeholder="Choose an image of this page…",
        key=key,
        on_change=_picked,
        args=(key,),
    )
    path = st.session_state.pop("inspect-path", None)
    if path in paths:
        _inspect(config_path, view, rows.iloc[paths.index(path)], names, layer)


def _picked(key: str) -> None:
    st.session_state["inspect-path"] = st.session_state[key]
    st.session_state[trust.DIALOG_OPEN] = True  # the badge polls must not rerun the page
    st.session_state[key] = None  # choosing the same image again opens it again


@st.dialog("Inspect image", width="large")
def _inspect(
    config_path: str, view: ViewState, row: pd.Series, names: tuple[str, ...], layer: str | None
) -> None:
    import torch

    from core.analysis.panels import enlarge
    from core.explain.cam import METHODS as CAM_FUNCTIONS
    from core.explain.cam import layer_activations
    from core.explain.overlay import overlay

    model = resources.model(config_path, view.model)
    dataset = resources.dataset(config_path, view.dataset, view.model)
    probs = resources.evaluation(config_path, view.model, view.dataset).probs([row["index"]])[0]
    st.markdown(f"**{row['path']}** · true {names[int(row['true'])]}")
    try:  # the gallery's own read: what a card shows, this shows
        image = dataset.image(row["path"], 3)
        x = model.normalize(model.resize(dataset.load(row["path"], model.spec.channels)))[None]
    except Exception as exc:  # the file changed or vanished since the evaluation
        st.warning(f"This image cannot be shown: {reason_of(exc)}")
        return
    cols = st.columns(2)
    cls = cols[0].selectbox(
        "Map for class",
        range(len(names)),
        index=int(row["pred"]),
        format_func=lambda i: f"{names[i]} ({probs[i]:.1%})",
    )
    method = cols[1].selectbox("Method", METHODS, index=METHODS.index(view.method))
    left, right = st.columns(2)
    left.image(enlarge(image, 320), caption="image", width="stretch", output_format="PNG")
    try:
        cam_map = CAM_FUNCTIONS[method](
            model.module, x.to(model.device), torch.tensor([cls]), layer=layer
        )
        right.image(
            enlarge(overlay(image, cam_map[0], alpha=view.opacity), 320),
            caption=f"{method} · {names[cls]}" + (f" · layer {layer}" if layer else ""),
            width="stretch",
            output_format="PNG",
        )
        trust.curves_panel(model, x[0], cam_map[0], cls, method, layer, names[cls])
    except ValueError as exc:
        right.warning(str(exc))
    from dashboard.similar_ui import similar_section

    similar_section(config_path, view, row)
    layers, _ = resources.layers(config_path, view.model)
    layer_names = [info.name for info in layers]
    if layer_names:
        chosen = st.selectbox(
            "Activations of layer",
            layer_names,
            index=layer_names.index(layer) if layer in layer_names else len(layer_names) - 1,
        )
        acts = layer_activations(model.module, x.to(model.device), chosen, top_n=8)
        _activation_grid(image, acts, chosen)
    else:
        st.caption("This model has no layer with a 4-D output: no activations to show.")
    st.divider()
    editor(
        resources.notes_store(config_path, settings().read_only),
        dataset_key(resources.project(config_path).dataset(view.dataset)),
        row["path"],
    )


def _activation_grid(image: Image.Image, acts, chosen: str) -> None:  # type: ignore[no-untyped-def]
    from core.analysis.panels import enlarge
    from core.explain.overlay import overlay

    st.caption(f"top {len(acts.channels)} channels of {chosen} by mean activation")
    grid = st.columns(4)
    for i, (channel, mean) in enumerate(
        zip(acts.channels.tolist(), acts.means.tolist(), strict=True)
    ):
        grid[i % 4].image(
            enlarge(overlay(image, acts.maps[i], alpha=1.0), 160),
            caption=f"channel {channel} · mean {mean:.3g}",
            width="stretch",
            output_format="PNG",
        )


def card_html(
    path: str,
    caption: tuple[str, str],
    panels: Iterable[tuple[str, str]],
    badges: str = "",
    problem: str = "",
    panel_badges: Sequence[str] = (),
) -> str:
    """One gallery card's file name, caption, panels (data URLs) and badges as escaped HTML;
    ``problem``, when given, is shown in place of the panels. ``panel_badges`` are HTML made
    here (faithfulness badges, :mod:`dashboard.trust`), shown under each panel's caption.

    The whole page of cards is one element, which keeps a click on a cell quick to render even
    with many people on one server. Every text is escaped: file and class names, tags come from
    the dataset and from users, never trusted as markup.
    """
    extra = list(panel_badges)
    figures = "".join(
        f'<figure style="{_FIGURE}"><img src="{escape(url)}" alt="{escape(label)}" '
        f'style="{_IMG}"><figcaption style="{_CAPTION}">{escape(label)}</figcaption>'
        f"{_badge_row(extra[i] if i < len(extra) else '')}</figure>"
        if url
        else f'<figure style="{_FIGURE}"><figcaption style="{_CAPTION}">no map</figcaption>'
        "</figure>"
        for i, (url, label) in enumerate(panels)
    )
    bold, rest = caption
    return (
        f'<div class="cam-card" style="{_CARD}">'
        f'<p style="margin:0 0 .25rem"><strong>{escape(path)}</strong></p>'
        f'<p style="{_CAPTION}"><b>{escape(bold)}</b>{escape(rest)}</p>'
        + (
            f'<p class="cam-card-problem" style="{_PROBLEM}">{escape(problem)}</p>'
            if problem
            else f'<div style="display:flex;gap:.75rem">{figures}</div>'
        )
        + (f'<p style="{_CAPTION}">{escape(badges)}</p>' if badges else "")
        + "</div>"
    )


def _badge_row(badge: str) -> str:
    return f'<div class="cam-fb-row" style="{_CAPTION}">{badge}</div>' if badge else ""


_GRID = "display:grid;grid-template-columns:repeat(2,minmax(0,1fr));gap:1rem"
_CARD = "border:1px solid rgba(49,51,63,.2);border-radius:.5rem;padding:1rem"
_FIGURE = "flex:1 1 0;min-width:0;margin:0;text-align:center"
_IMG = "width:100%;height:auto;image-rendering:pixelated;border-radius:.25rem"
_PROBLEM = "margin:.5rem 0;padding:.5rem .75rem;border-radius:.25rem;background:#fff3cd"
_CAPTION = "font-size:.875rem;color:rgba(49,51,63,.6);margin:.25rem 0"


def _csv(rows: pd.DataFrame, names: tuple[str, ...]) -> bytes:
    out = rows.assign(true=[names[i] for i in rows["true"]], pred=[names[i] for i in rows["pred"]])
    return out.to_csv(index=False).encode()
