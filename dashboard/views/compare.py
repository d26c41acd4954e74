"""Compare models: what candidates fixed and broke relative to a baseline on the same test set.

One candidate (``model_b``): the 2 × 2 agreement table with McNemar's exact p-value; a button
per agreement cell opens its gallery, where every image shows A's and B's predicted-class map
and each one's true-class map. Per-class recall and F1 changes below.

Several candidates (``candidates``, repeated in the URL): a heatmap of groups (overall, each
class) × candidates coloured by the change in accuracy from the baseline, the significant
cells marked as ``python -m core check`` would judge them; a click on a cell opens its newly
broken (or fixed) images with both models' maps; accuracy across the checkpoints in config
order below.

Groups: overall, each class, and the slice groups ``python -m core check`` tests (each saved
slice, each metadata value). A slice in the URL (``where=``, the slice bar at the top; evaluated
on the baseline's columns) restricts both views to its images: the 2 × 2 table, McNemar's test,
the galleries, the per-class table and every group of the heatmap.

URL: baseline (``model``), ``model_b``, ``candidates``, dataset, cell (``agree``), ``group``
(``class:<name>`` or ``slice:<name>``, as ``check`` writes its links), ``rows``, ``where``,
sort and page.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import streamlit as st

from core import UserFacingError
from core.analysis.comparison import Agreement, Comparison
from core.config import ProjectConfig
from core.data.datasets import dataset_key
from core.notes import NotesError
from dashboard.parts.checkpoints import (
    LABELLED_ROWS,
    group_label,
    group_summary,
    parse_group,
    show_accuracy,
    show_heatmap,
    significant_table,
)
from dashboard.parts.page import ProjectView, error_panel, project_view
from dashboard.parts.pair_gallery import pair_gallery
from dashboard.parts.slice_bar import saved_slices, slice_bar
from dashboard.state import analyses, resources
from dashboard.state.slicing import SliceFilter
from dashboard.state.url import bind, set_params
from dashboard.state.view_state import ViewState

if TYPE_CHECKING:
    from core.analysis.checkpoints import Checkpoints
    from core.analysis.regression import Gate

CELLS = {c.name.lower(): c for c in Agreement}
SHORT = {
    Agreement.BOTH_RIGHT: "both right",
    Agreement.FIXED: "fixed",
    Agreement.BROKEN: "newly broken",
    Agreement.SAME_WRONG: "both wrong, same class",
    Agreement.DIFFERENT_WRONG: "both wrong, different",
}
CANDIDATES_KEY = "compare:candidates"
CLEARED = ("agree", "group", "page", "csort")  # a new pair or baseline starts afresh
ROWS = {"all": "all", "significant": "overall and the significant ones"}
ALL_ROWS_UP_TO = LABELLED_ROWS  # groups drawn by default; past that, the significant ones


def main() -> None:
    project = project_view()
    config, view = project.config, project.view
    models, datasets = project.models, project.datasets
    params = st.query_params.to_dict()
    asked = _asked(params)
    unknown = [(p, m) for p, m in asked if m not in models]
    chosen = list(dict.fromkeys(m for _, m in asked if m in models and m != view.model))
    if "candidates" not in params and "model_b" not in params:  # none asked: the best match
        chosen = config.comparable_models(view.model, view.dataset)[:1]
    options = list(dict.fromkeys([*config.comparable_models(view.model, view.dataset), *chosen]))
    with st.sidebar:
        bind(st.selectbox, "Model A (baseline)", "model", view.model, models, reset=CLEARED)
        if options:
            _candidates_picker(options, chosen)
        bind(st.selectbox, "Dataset", "dataset", view.dataset, datasets, reset=CLEARED)
        bind(st.selectbox, "Maps", "method", view.method, ["Grad-CAM", "Grad-CAM++", "Saliency"])
    st.title("Compare models")
    if unknown:
        names = ", ".join(f"{m!r} ({p})" for p, m in unknown)
        error_panel(
            "Unknown model in the link",
            UserFacingError(f"{names}; the models of this project: {', '.join(models)}"),
        )
        st.stop()
    if not options:
        st.info(
            f"No other model of this project is evaluated on *{view.dataset}* with the classes "
            f"of **{view.model}**. Pick another model A, or add a model entry with the same "
            "`classes` and `datasets`.",
            icon=":material/info:",
        )
        st.stop()
    if not chosen:
        st.info("Pick one or more candidates (model B) in the sidebar.", icon=":material/info:")
        st.stop()
    if len(chosen) == 1:
        _pair_view(project, chosen[0], params)
    else:
        _checkpoints_view(project, chosen, params)


def _asked(params: dict[str, str]) -> list[tuple[str, str]]:
    """(parameter, model name) of every model the URL names: the baseline, then candidates
    (``candidates``, repeated, else ``model_b``); an empty ``candidates=`` names none."""
    asked = [("model", params["model"])] if "model" in params else []
    listed = [c for c in st.query_params.get_all("candidates") if c]
    if "candidates" in params:
        return asked + [("candidates", c) for c in listed]
    return asked + ([("model_b", params["model_b"])] if "model_b" in params else [])


def _candidates_picker(options: list[str], chosen: list[str]) -> None:
    """The candidates (model B): one gives the two-model view, several the heatmap."""
    if st.session_state.get(CANDIDATES_KEY) != chosen:
        st.session_state[CANDIDATES_KEY] = chosen
    st.multiselect(
        "Candidates (model B)",
        options,
        key=CANDIDATES_KEY,
        on_change=_store_candidates,
        help="One candidate: what it fixed and broke. Several: a heatmap of every class × "
        "candidate against the baseline.",
    )


def _store_candidates() -> None:
    picked = list(st.session_state[CANDIDATES_KEY])
    for name in ("candidates", "model_b", *CLEARED):
        st.query_params.pop(name, None)
    if len(picked) == 1:
        st.query_params["model_b"] = picked[0]
    else:  # none (an empty parameter: no default pick) or several
        st.query_params["candidates"] = picked or ""


def _refusal(config: ProjectConfig, baseline: str, candidate: str, dataset: str) -> str | None:
    """Why the config already says two models cannot be compared on ``dataset`` (or None)."""
    if dataset not in config.datasets_for(candidate):
        return (
            f"{candidate!r} is not evaluated on dataset {dataset!r} (its datasets: "
            f"{', '.join(config.datasets_for(candidate))}); pick two models of the same dataset"
        )
    mine, theirs = config.model(baseline).classes, config.model(candidate).classes
    if mine is not None and theirs is not None and list(mine) != list(theirs):
        return f"{candidate!r} declares other classes than {baseline!r}"
    return None


# ----------------------------------------------------------------------------- one candidate


def _pair_view(project: ProjectView, model_b: str, params: dict[str, str]) -> None:
    config, config_path, view = project.config, project.config_path, project.view
    st.caption(f"A = **{view.model}**, B = **{model_b}**, on *{view.dataset}*")
    try:
        reason = _refusal(config, view.model, model_b, view.dataset)
        if reason is not None:
            raise UserFacingError(reason)
        with st.spinner("Evaluating both models…"):
            prints = tuple(
                resources.evaluation(config_path, m, view.dataset).fingerprint
                for m in (view.model, model_b)
            )
            result = analyses.comparison(config_path, view.model, model_b, view.dataset, prints)
    except UserFacingError as exc:
        error_panel("These two models cannot be compared", exc)
        st.stop()
    flt = slice_bar(project, resources.evaluation(config_path, view.model, view.dataset))
    if flt is not None:  # the slice is A's: its images among the matched ones
        result = result.subset(flt.positions[result.rows_a])
        _stop_if_empty(len(result.paths))
    _summary(result, flt)
    cell = CELLS.get(params.get("agree", ""))
    kind, name = parse_group(params.get("group"))
    if cell is None:
        st.info("Pick a cell of the agreement table to see its images with both models' maps.")
    elif kind == "overall":
        pair_gallery(config_path, view, (view.model, model_b), result, cell)
    else:
        with st.spinner("Testing every class…"):
            found = _checkpoints(project, (model_b,), prints, flt)
        if model_b in found.refused:
            error_panel(
                "These two models cannot be compared", UserFacingError(found.refused[model_b])
            )
            st.stop()
        _group_gallery(config_path, view, found.gates[model_b], model_b, kind, name, cell)
    _per_class(result)


def _stop_if_empty(images: int) -> None:
    """Stop the page, with a note, when the slice holds none of the compared images."""
    if not images:
        st.info(
            "No compared image is in this slice: remove a condition in the slice bar.",
            icon=":material/filter_alt_off:",
        )
        st.stop()


def _summary(result: Comparison, flt: SliceFilter | None) -> None:
    """The 2 × 2 table as buttons (each opens its cell), and McNemar's test beside it (of the
    slice's images when there is one)."""
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
                        args=({"agree": cell.name.lower()}, ("page", "csort")),
                        width="stretch",
                        type="primary" if cell == Agreement.FIXED else "secondary",
                    )
    with right:
        st.metric("McNemar's exact test, p", f"{result.p_value():.3g}")
        fixed, broken = counts[Agreement.FIXED], counts[Agreement.BROKEN]
        within = " in the slice" if flt is not None else ""
        st.caption(
            f"{fixed} fixed vs {broken} newly broken of {len(result.paths)} images matched by "
            f"path{within}; p is the chance of a split at least this uneven if B were no "
            "better than A."
        )
        if result.only_a or result.only_b:
            st.caption(f"Unmatched: {result.only_a} only in A, {result.only_b} only in B.")


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


# ----------------------------------------------------------------------------- a group's images


def _group_gallery(
    config_path: str,
    view: ViewState,
    gate: Gate,
    model_b: str,
    kind: str,
    name: str,
    cell: Agreement,
) -> None:
    """One group's images of a cell (``Gate.rows`` order), with a line on the group and
    buttons between its newly broken and fixed images."""
    if not kind:
        error_panel(
            "Unknown group in the link",
            UserFacingError(f"{name!r}: write group=class:<name> or group=slice:<name>"),
        )
        return
    try:
        mask = gate.mask(kind, name)
    except UserFacingError as exc:
        classes = ", ".join(gate.comparison.classes[:20])
        error_panel("Unknown group in the link", UserFacingError(f"{exc} (classes: {classes}…)"))
        return
    st.markdown(f"**{model_b}** vs **{view.model}** · {group_summary(gate, kind, name)}")
    counts = gate.table[(gate.table["group"] == kind) & (gate.table["name"] == name)]
    broken = int(counts["broken"].iloc[0]) if len(counts) else 0
    fixed = int(counts["fixed"].iloc[0]) if len(counts) else 0
    row = st.columns(4)
    buttons = ((Agreement.BROKEN, f"newly broken: {broken}"), (Agreement.FIXED, f"fixed: {fixed}"))
    for column, (shown, label) in zip(row[:2], buttons, strict=True):
        column.button(
            label,
            key=f"group-{shown.name}",
            on_click=set_params,
            args=({"agree": shown.name.lower()}, ("page", "csort")),
            type="primary" if shown == cell else "secondary",
            width="stretch",
        )
    if "group" in st.query_params:
        row[2].button("All images", key="group-clear", on_click=set_params, args=({}, ("group",)))
    pair_gallery(
        config_path, view, (view.model, model_b), gate.comparison, cell, mask,
        group_label(kind, name),
    )  # fmt: skip


# ----------------------------------------------------------------------------- N candidates


def _checkpoints(
    project: ProjectView,
    candidates: tuple[str, ...],
    prints: tuple[str, ...],
    flt: SliceFilter | None,
) -> Checkpoints:
    """The candidates checked against the baseline (``project.view.model``) overall, per
    class and per slice group (the saved slices, every metadata value), within ``flt``."""
    view = project.view
    try:
        saved = saved_slices(project).all(dataset_key(project.config.dataset(view.dataset)))
    except NotesError as exc:
        st.caption(f"Saved slices are not tested: {exc}")
        saved = []
    named = tuple((s.name, s.slice) for s in saved)
    where, positions = (flt.param, flt.positions) if flt is not None else ("", None)
    return analyses.checkpoints(
        project.config_path, view.model, candidates, view.dataset, prints, named, where,
        positions,
    )  # fmt: skip


def _checkpoints_view(project: ProjectView, chosen: list[str], params: dict[str, str]) -> None:
    config, config_path, view = project.config, project.config_path, project.view
    rank = {m.name: i for i, m in enumerate(config.models)}
    chosen = sorted(chosen, key=rank.__getitem__)  # the heatmap's columns in config order
    good, prints, refused = _evaluated(config_path, config, view, chosen)
    flt = slice_bar(project, resources.evaluation(config_path, view.model, view.dataset))
    if flt is not None:
        _stop_if_empty(flt.images)
    if good:
        with st.spinner("Testing every group of every candidate…"):
            found = _checkpoints(project, good, prints, flt)
        refused |= found.refused
    for model, reason in refused.items():
        st.warning(f"**{model}** is left out: {reason}", icon=":material/warning:")
    if not good or not found.gates:
        error_panel(
            "No candidate can be compared with the baseline",
            UserFacingError(f"{view.model!r} on {view.dataset!r}: see the reasons above"),
        )
        st.stop()
    gates = found.gates
    any_gate = next(iter(gates.values()))
    within = " in the slice" if flt is not None else ""
    st.caption(
        f"Baseline **{view.model}** against {len(gates)} candidates on *{view.dataset}*, "
        f"{len(any_gate.comparison.true):,} images{within}: the change in accuracy (recall, for a "
        "class) from the baseline. ▼ regression, ▲ improvement: McNemar's exact test, Holm "
        f"within each candidate, p < {any_gate.alpha:g} and a change of at least "
        f"{any_gate.min_drop * 100:g} point (as `python -m core check`). Click a cell for its "
        "newly broken or fixed images."
    )
    shown = _rows_shown(found, params)
    model_b = params.get("model_b", "")
    cell = CELLS.get(params.get("agree", ""))
    kind, name = parse_group(params.get("group"))
    picked = model_b in gates and cell is not None
    row = shown.row_of(kind, name) if picked else None
    selected = (row, shown.candidates.index(model_b)) if row is not None else None
    show_heatmap(shown, selected)
    if picked and cell is not None:
        _group_gallery(config_path, view, gates[model_b], model_b, kind, name, cell)
    order = [m.name for m in config.models if m.name == view.model or m.name in gates]
    show_accuracy(found, order, view.model)
    significant = significant_table(found)
    with st.expander(f"Regressions and improvements ({len(significant)})"):
        st.dataframe(significant, hide_index=True, width="stretch")


def _evaluated(
    config_path: str, config: ProjectConfig, view: ViewState, chosen: list[str]
) -> tuple[tuple[str, ...], tuple[str, ...], dict[str, str]]:
    """The candidates that could be evaluated on the view's dataset, the fingerprints (the
    baseline's first) and why each other one is left out; stops with a message when the
    baseline itself cannot be evaluated."""
    refused: dict[str, str] = {}
    good: list[str] = []
    with st.spinner(f"Evaluating {len(chosen) + 1} models…"):
        try:
            prints = [resources.evaluation(config_path, view.model, view.dataset).fingerprint]
        except UserFacingError as exc:
            error_panel(f"Cannot evaluate the baseline {view.model!r} on {view.dataset!r}", exc)
            st.stop()
        for model in chosen:
            try:
                reason = _refusal(config, view.model, model, view.dataset)
                if reason is not None:
                    raise UserFacingError(reason)
                prints.append(resources.evaluation(config_path, model, view.dataset).fingerprint)
                good.append(model)
            except UserFacingError as exc:
                refused[model] = str(exc)
    return tuple(good), tuple(prints), refused


def _rows_shown(found: Checkpoints, params: dict[str, str]) -> Checkpoints:
    """All groups, or (``rows=significant``, the default past :data:`ALL_ROWS_UP_TO` groups)
    only overall and those where a candidate regressed or improved."""
    many = len(found.groups) > ALL_ROWS_UP_TO
    asked = params.get("rows") if params.get("rows") in ROWS else None
    choice = asked or ("significant" if many else "all")
    bind(st.radio, "Groups", "rows", choice, list(ROWS), format_func=ROWS.get, horizontal=True)
    return found.subset(found.significant_rows()) if choice == "significant" else found


main()
