"""Compare models: what model B fixed and broke relative to model A on the same test set.

The 2 × 2 agreement table with McNemar's exact p-value; a button per agreement cell opens its
gallery, where every image shows A's and B's predicted-class map and each one's true-class
map, sorted by the change in true-class probability. Per-class recall and F1 changes below.
Model A (``model``), model B (``model_b``), dataset, cell (``agree``), sort and page live in
the URL.
"""

from __future__ import annotations

import streamlit as st

from core import UserFacingError
from core.analysis.comparison import Agreement, Comparison
from core.analysis.gallery import class_maps, page_count
from core.errors import reason_of
from core.explain.map_cache import Unavailable
from dashboard.parts.gallery import card_html
from dashboard.parts.page import error_panel, project_view
from dashboard.state import analyses, resources
from dashboard.state.url import bind, set_params

PAGE_SIZE = 12
CELLS = {c.name.lower(): c for c in Agreement}
SHORT = {
    Agreement.BOTH_RIGHT: "both right",
    Agreement.FIXED: "fixed",
    Agreement.BROKEN: "newly broken",
    Agreement.SAME_WRONG: "both wrong, same class",
    Agreement.DIFFERENT_WRONG: "both wrong, different",
}
ORDERS = {
    "gain": "true-class probability gain (B - A, largest first)",
    "loss": "largest drop first",
}


def main() -> None:
    project = project_view()
    config, config_path, view = project.config, project.config_path, project.view
    models, datasets = project.models, project.datasets
    params = st.query_params.to_dict()
    others = [m for m in models if m != view.model]
    model_b = params.get("model_b")
    comparable = config.comparable_models(view.model, view.dataset)
    if model_b not in others:
        model_b = comparable[0] if comparable else None
    with st.sidebar:
        bind(st.selectbox, "Model A", "model", view.model, models, reset=("agree", "page"))
        if model_b is not None:
            bind(st.selectbox, "Model B", "model_b", model_b, others, reset=("agree", "page"))
        bind(st.selectbox, "Dataset", "dataset", view.dataset, datasets, reset=("agree", "page"))
        bind(st.selectbox, "Maps", "method", view.method, ["Grad-CAM", "Grad-CAM++", "Saliency"])
    st.title("Compare models")
    if model_b is None:
        st.info(
            f"No other model of this project is evaluated on *{view.dataset}* with the classes "
            f"of **{view.model}**. Pick another model A, or add a model entry with the same "
            "`classes` and `datasets`.",
            icon=":material/info:",
        )
        st.stop()
    st.caption(f"A = **{view.model}**, B = **{model_b}**, on *{view.dataset}*")
    try:
        if view.dataset not in config.datasets_for(model_b):
            raise UserFacingError(
                f"{model_b!r} is not evaluated on dataset {view.dataset!r} (its datasets: "
                f"{', '.join(config.datasets_for(model_b))}); pick two models of the same dataset"
            )
        with st.spinner("Evaluating both models…"):
            prints = tuple(
                resources.evaluation(config_path, m, view.dataset).fingerprint
                for m in (view.model, model_b)
            )
            result = analyses.comparison(config_path, view.model, model_b, view.dataset, prints)
    except UserFacingError as exc:
        error_panel("These two models cannot be compared", exc)
        st.stop()
    _summary(result)
    cell = CELLS.get(params.get("agree", ""))
    if cell is None:
        st.info("Pick a cell of the agreement table to see its images with both models' maps.")
    else:
        _gallery(config_path, view, model_b, result, cell, params)
    _per_class(result)


def _summary(result: Comparison) -> None:
    """The 2 × 2 table as buttons (each opens its cell), and McNemar's test beside it."""
    counts = result.counts()
    left, right = st.columns([3, 2])
    with left:
        header = st.columns([2, 3, 3])
        header[1].markdown(f"**B right** ({result.b})")
        header[2].markdown(f"**B wrong** ({result.b})")
        layout = (
            (f"**A right** ({result.a})", [[Agreement.BOTH_RIGHT], [Agreement.BROKEN]]),
            (
                f"**A wrong** ({result.a})",
                [[Agreement.FIXED], [Agreement.SAME_WRONG, Agreement.DIFFERENT_WRONG]],
            ),
        )
        for title, cells in layout:
            row = st.columns([2, 3, 3], vertical_alignment="center")
            row[0].markdown(title)
            for column, group in zip(row[1:], cells, strict=True):
                for cell in group:
                    column.button(
                        f"{SHORT[cell]}: {counts[cell]}",
                        key=f"agree-{cell.name}",
                        on_click=set_params,
                        args=({"agree": cell.name.lower()}, ("page",)),
                        width="stretch",
                        type="primary" if cell == Agreement.FIXED else "secondary",
                    )
    with right:
        st.metric("McNemar's exact test, p", f"{result.p_value():.3g}")
        fixed, broken = counts[Agreement.FIXED], counts[Agreement.BROKEN]
        st.caption(
            f"{fixed} fixed vs {broken} newly broken of {len(result.paths)} images matched by "
            "path; p is the chance of a split at least this uneven if B were no better than A."
        )
        if result.only_a or result.only_b:
            st.caption(f"Unmatched: {result.only_a} only in A, {result.only_b} only in B.")


def _gallery(
    config_path: str, view, model_b: str, result: Comparison, cell: Agreement, params
) -> None:  # type: ignore[no-untyped-def]
    order = params.get("csort") if params.get("csort") in ORDERS else "gain"
    positions = result.cell_positions(cell, descending=order == "gain")
    st.subheader(f"{cell.label}: {len(positions)} images")
    cols = st.columns(2)
    with cols[0]:
        bind(
            st.selectbox, "Sort by", "csort", order, list(ORDERS), ("page",), format_func=ORDERS.get
        )
    pages = page_count(len(positions), PAGE_SIZE)
    page = min(view.page, pages)
    if pages > 1:
        with cols[1]:
            bind(st.number_input, f"Page (of {pages})", "page", page, min_value=1, max_value=pages)
    shown = positions[(page - 1) * PAGE_SIZE : page * PAGE_SIZE]
    if not len(shown):
        st.info("No images in this cell.")
        return
    paths = [str(p) for p in result.paths[shown]]
    maps = {
        name: _maps(config_path, name, view, paths, pred[shown], result.true[shown])
        for name, pred in ((view.model, result.pred_a), (model_b, result.pred_b))
    }
    dataset = resources.dataset(config_path, view.dataset, view.model)
    names = result.classes
    cards = []
    for n, i in enumerate(shown):
        true = names[result.true[i]]
        pa, pb = names[result.pred_a[i]], names[result.pred_b[i]]
        try:
            for side in (maps[view.model][n], maps[model_b][n]):
                if isinstance(side, Unavailable):
                    raise OSError(side.reason)
            row_maps = [*maps[view.model][n], *maps[model_b][n]]
            urls = resources.panel_cache().panels(dataset, paths[n], row_maps, view.opacity)
        except Exception as exc:  # the file changed or vanished since the evaluation
            cards.append(card_html(paths[n], ("", f"cannot be shown ({reason_of(exc)})"), []))
            continue
        caption = (
            f"true {true}",
            f" · A predicted {pa} (true class {result.prob_a[i]:.1%}) · B predicted {pb} "
            f"(true class {result.prob_b[i]:.1%}) · change {result.prob_change[i]:+.1%}",
        )
        labels = ("image", f"A · predicted {pa}", f"A · true {true}", f"B · predicted {pb}",
                  f"B · true {true}")  # fmt: skip
        cards.append(card_html(paths[n], caption, zip(urls, labels, strict=True)))
    grid = "display:grid;grid-template-columns:minmax(0,1fr);gap:1rem;max-width:60rem"
    st.html(f'<div class="cam-gallery" style="{grid}">{"".join(cards)}</div>')


def _maps(config_path: str, model_name: str, view, paths, pred, true):  # type: ignore[no-untyped-def]
    """[predicted, true] maps of each image under one model (None where it cannot apply)."""
    dataset = resources.dataset(config_path, view.dataset, model_name)
    fingerprint = resources.evaluation(config_path, model_name, view.dataset).fingerprint
    pairs = [(int(p), int(t)) for p, t in zip(pred, true, strict=True)]
    try:  # stored results open without the model: it is loaded here, for the maps
        model = resources.model(config_path, model_name)
        _, layer = resources.layers(config_path, model_name)
        return class_maps(
            model, dataset, paths, pairs, view.method, layer, resources.map_cache(), fingerprint
        )
    except (ValueError, UserFacingError) as exc:
        st.warning(f"{view.method} cannot be computed for {model_name!r}: {exc}")
        return [[None, None] for _ in paths]


def _per_class(result: Comparison) -> None:
    table = result.per_class()
    top = result.top_class_changes(20)
    st.subheader("Per-class recall and F1, B - A")
    st.caption(
        f"The {len(top)} classes whose F1 changed most (of {len(table)}); all below."
        if len(top)
        else "No class's recall or F1 changed."
    )
    number = {
        c: st.column_config.NumberColumn(format="%+.3f") for c in ("recall_change", "f1_change")
    }
    if len(top):
        st.dataframe(top, hide_index=True, width="stretch", column_config=number)
    with st.expander(f"All {len(table)} classes"):
        st.dataframe(table, hide_index=True, width="stretch", column_config=number)


main()
