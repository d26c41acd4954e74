"""**Test this pattern**: the causal test of a pattern (:mod:`core.analysis.causal`) on its card.

Pattern cards are drawn in rows of columns, each card with its verdict label (read from what is
stored beside the result: no model) and a **Test this pattern** button under it. The button puts
the pattern's rank in the URL (``test=<rank>``), so the open test is a link and a reload shows
it again. Under the row of the tested card a panel shows the test:

- while it runs (server-wide, one run per subject whoever asked first:
  :mod:`dashboard.state.verdicts`), its progress, in a fragment that polls and stops its own
  timer when the run is done (no page rerun);
- once done (or at once, when the verdict is stored), the verdict as a coloured label with its
  numbers, the four rates with their 95% intervals (a Plotly chart), the Fisher p-values and
  the example images (:mod:`dashboard.parts.verdict_examples`), which need the model and come
  a moment later after a reload.

Errors (the model cannot be loaded, no image can be read) are a message in the panel with a
**Try again** button; too few targets are said beside the numbers.
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

import streamlit as st

from core import Results
from core.analysis.causal import (
    DEFAULT_TARGETS,
    HOLD_MARGIN,
    HOLD_P,
    Arm,
    Verdict,
    pattern_subject,
    stored_verdict,
)
from core.analysis.patterns import Pattern
from core.errors import reason_of
from dashboard.parts.findings import pattern_pin_button
from dashboard.parts.verdict_examples import examples_html
from dashboard.state.polling import until_done
from dashboard.state.verdicts import SEED, verdict_run
from dashboard.state.view_state import ViewState

__all__ = [
    "COLOURS",
    "POLL_SECONDS",
    "TEST_PARAM",
    "arms_figure",
    "pattern_grid",
    "pattern_strip",
    "stored_labels",
    "tested_rank",
    "verdict_label",
]

POLL_SECONDS = 0.5
TEST_PARAM = "test"  # the URL's query parameter: the rank of the pattern whose test is open
COLOURS = {  # the verdict's label
    "causal": "#b91c1c",
    "sufficient": "#c2410c",
    "necessary": "#a16207",
    "not shown": "#6b7280",
}
_LABEL = "display:inline-block;padding:0 .45rem;border-radius:.6rem;font-size:.75rem;color:#fff"


# ----------------------------------------------------------------------------- labels


def verdict_label(verdict: Verdict | None, key: str) -> str:
    """The label of a verdict for a card (HTML; an empty slot with no verdict, which the panel
    fills once a test of subject ``key`` finishes)."""
    if verdict is None:
        return f'<span class="verdict-label verdict-empty" data-subject="{key}"></span>'
    name = verdict.verdict
    tip = (
        f"causal test ({DEFAULT_TARGETS} targets at most): transplant "
        f"{_rate(verdict.transplant)} vs control {_rate(verdict.transplant_control)}, "
        f"p = {verdict.p_transplant:.2g}; erase {_rate(verdict.erase)} vs control "
        f"{_rate(verdict.erase_control)}, p = {verdict.p_erase:.2g}"
    )
    return (
        f'<span class="verdict-label" data-subject="{key}" data-verdict="{escape(name)}" '
        f'title="{escape(tip)}" style="{_LABEL};background:{COLOURS[name]}">'
        f"{escape(name)}</span>"
    )


def stored_labels(result: Results, patterns: Sequence[Pattern]) -> list[str]:
    """Each pattern's verdict label from what is stored beside ``result`` (no model)."""
    labels = []
    for pattern in patterns:
        subject = pattern_subject(result, pattern)
        labels.append(verdict_label(stored_verdict(result, subject), subject.key))
    return labels


def _rate(arm: Arm) -> str:
    return f"{arm.hits}/{arm.n}" + (f" = {arm.rate:.2f}" if arm.n else "")


# ----------------------------------------------------------------------------- cards


def tested_rank() -> int:
    """The rank (1-based) of the pattern whose test the URL opens; 0: none."""
    value = st.query_params.get(TEST_PARAM, "")
    return int(value) if value.isdigit() else 0


def pattern_grid(
    config_path: str,
    view: ViewState,
    result: Results,
    patterns: Sequence[Pattern],
    cards: Sequence[str],
    columns: int,
    css_class: str = "pattern-grid",
) -> None:
    """``cards`` (HTML of ``patterns``, in order) in rows of ``columns``, each with its
    **Test this pattern** button; the open test's panel under its row."""
    _rows(config_path, view, result, [(c, p) for c, p in zip(cards, patterns, strict=True)],
          columns, css_class, "grid")  # fmt: skip


def pattern_strip(
    config_path: str,
    view: ViewState,
    result: Results,
    patterns: Sequence[Pattern],
    cards: Sequence[str],
    columns: int = 4,
) -> None:
    """The cell view's strip: ``cards`` are the whole cell's card, then one per pattern of
    ``patterns``; each pattern with its button, and the open test's panel under its row."""
    items: list[tuple[str, Pattern | None]] = [(cards[0], None)] if cards[0] else []
    items += [(c, p) for c, p in zip(cards[1:], patterns, strict=True)]
    _rows(config_path, view, result, items, columns, "pattern-strip", "strip")


def _rows(
    config_path: str,
    view: ViewState,
    result: Results,
    items: Sequence[tuple[str, Pattern | None]],
    columns: int,
    css_class: str,
    where: str,
) -> None:
    rank = tested_rank()
    for start in range(0, len(items), columns):
        row = items[start : start + columns]
        for column, (card, pattern) in zip(st.columns(columns), row, strict=False):
            with column:
                st.html(f'<div class="{css_class}">{card}</div>')
                if pattern is not None:
                    with st.container(horizontal=True):
                        _button(pattern, rank, where)
                        pattern_pin_button(config_path, view, result, pattern, where)
        tested = next((p for _, p in row if p is not None and p.rank + 1 == rank), None)
        if tested is not None:
            _panel_with_poll(config_path, view, result, tested)


def _button(pattern: Pattern, rank: int, where: str) -> None:
    mine = pattern.rank + 1
    st.button(
        "Hide the test" if mine == rank else "Test this pattern",
        key=f"verify-{where}-{mine}",
        icon=":material/science:",
        on_click=_toggle,
        args=(mine, rank),
        help="Does its region cause the prediction? Paste it into other images and erase it "
        "from its own, against controls (a few hundred forward passes; stored with the result).",
    )


def _toggle(mine: int, open_rank: int) -> None:
    if mine == open_rank:
        st.query_params.pop(TEST_PARAM, None)
    else:
        st.query_params[TEST_PARAM] = str(mine)


# ----------------------------------------------------------------------------- the panel


def _panel_with_poll(config_path: str, view: ViewState, result: Results, pattern: Pattern) -> None:
    subject = pattern_subject(result, pattern)
    run = verdict_run(config_path, view.model, view.dataset, result, subject, examples_html)
    until_done(_panel, POLL_SECONDS, not run.future.done())(config_path, view, result, pattern)


def _panel(config_path: str, view: ViewState, result: Results, pattern: Pattern) -> bool:
    """The test's panel (a fragment while the run is going); returns whether it is done."""
    names = result.classes
    subject = pattern_subject(result, pattern)
    retry = st.session_state.pop(f"verify-retry-{subject.key}", False)
    run = verdict_run(
        config_path, view.model, view.dataset, result, subject, examples_html, retry=retry
    )
    if retry:
        st.rerun()  # the whole page: its poll of the new run starts with the page's run
    stored = stored_verdict(result, subject, DEFAULT_TARGETS, SEED)
    with st.container(border=True, key=f"verdict-panel-{pattern.rank + 1}"):
        st.markdown(
            f"**Causal test of pattern #{pattern.rank + 1}**: true *{names[pattern.true]}* → "
            f"predicted *{names[pattern.pred]}*, {len(subject.rows):,} images"
        )
        if run.failed and stored is None:
            st.error(
                f"**The pattern could not be tested.** {reason_of(run.future.exception())}",  # type: ignore[arg-type]
                icon=":material/error:",
            )
            st.button(
                "Try again",
                key=f"verify-again-{subject.key}",
                on_click=st.session_state.__setitem__,
                args=(f"verify-retry-{subject.key}", True),
            )
            return True
        done = run.future.done()
        tested = run.future.result() if done and not run.failed else None
        verdict = stored or (tested.verdict if tested is not None else None)
        if verdict is None:
            _progress(run.progress.stage, run.progress.done, run.progress.total)
            return False
        _result(verdict, names, subject.key)
        if tested is not None and tested.examples:
            st.html(tested.examples)
        elif tested is not None:
            st.info(f"No example images: {tested.problem}", icon=":material/info:")
        elif run.failed:
            st.info(f"No example images: {run.future.exception()}", icon=":material/info:")
        else:
            st.caption("Making the example images…")
        return done


def _progress(stage: str, done: int, total: int) -> None:
    if stage == "model" or not total:
        st.progress(0.0, text="Loading the model…")
    else:
        st.progress(done / total, text=f"Testing: {done:,} of {total:,} forward passes…")


def _result(verdict: Verdict, names: Sequence[str], key: str) -> None:
    """The verdict's label and numbers, the interval chart and the box; the empty label slot
    of subject ``key`` on its card is filled (a stored verdict's own subject may spell its
    box's floats differently, and so its key: the caller's subject names the card)."""
    s = verdict.subject
    name = verdict.verdict
    fill = (  # the card's empty label slot, filled now (no page rerun)
        f'.verdict-empty[data-subject="{key}"]{{{_LABEL};background:{COLOURS[name]}}}'
        f'.verdict-empty[data-subject="{key}"]::after{{content:"{name}"}}'
    )
    meaning = {
        "causal": "the region is sufficient and necessary for the prediction",
        "sufficient": "pasting the region makes other images the class",
        "necessary": "without the region the pattern's images lose the class",
        "not shown": "neither arm holds",
    }[name]
    st.html(f"<style>{fill}</style>")  # style only: Streamlit keeps it out of the layout
    st.html(
        f'<div class="verdict-result" data-verdict="{escape(name)}">'
        f'<span style="{_LABEL};font-size:.9rem;background:{COLOURS[name]}">'
        f"{escape(name)}</span> <span>{escape(meaning)}</span></div>"
    )
    pred, true = names[s.pred], names[s.true]
    t, tc, e, ec = (
        verdict.transplant,
        verdict.transplant_control,
        verdict.erase,
        verdict.erase_control,
    )
    back = f", {e.to_true} back to *{true}*" if e.to_true is not None and s.true != s.pred else ""
    left, right = st.columns([3, 2])
    with left:
        st.markdown(
            f"- **Transplant** (sufficient?): {_arm(t)} targets flipped to *{pred}*, "
            f"control {_arm(tc)}; p = {verdict.p_transplant:.2g}: "
            f"{'**holds**' if verdict.sufficient else 'does not hold'}\n"
            f"- **Erase** (necessary?): {_arm(e)} images left *{pred}*{back}, "
            f"control {_arm(ec)}; p = {verdict.p_erase:.2g}: "
            f"{'**holds**' if verdict.necessary else 'does not hold'}"
        )
        x0, y0, x1, y1 = s.box
        st.caption(
            f"Region x {x0:.2f}–{x1:.2f}, y {y0:.2f}–{y1:.2f} of the input "
            f"({(x1 - x0) * (y1 - y0):.0%} of its area); {verdict.targets} targets at most, "
            f"seed {verdict.seed}. An arm holds where Fisher's one-sided p < {HOLD_P:g} and "
            f"its rate is at least {HOLD_MARGIN:g} above its control's. Intervals: 95% Wilson."
        )
        if t.n == 0:
            st.warning(
                f"No correctly classified image of another class than *{pred}* to paste into: "
                "the transplant arms are empty and cannot hold.",
                icon=":material/warning:",
            )
        elif t.n < verdict.targets:
            st.caption(
                f"Only {t.n} correctly classified images of other classes: fewer targets than "
                f"{verdict.targets}, wider intervals."
            )
    with right:
        st.plotly_chart(
            arms_figure(verdict, pred),
            config={"displayModeBar": False},
            key=f"verdict-chart-{key}",
        )


def _arm(arm: Arm) -> str:
    if not arm.n:
        return "0 of 0"
    lo, hi = arm.ci
    return f"{arm.hits} of {arm.n} = {arm.rate:.2f} ({lo:.2f}–{hi:.2f})"


def arms_figure(verdict: Verdict, pred: str):  # type: ignore[no-untyped-def]
    """The four rates with their 95% intervals (a Plotly figure: arms dark, controls grey)."""
    import plotly.graph_objects as go

    arms = [
        ("transplant", verdict.transplant, f"flipped to {pred}"),
        ("its control", verdict.transplant_control, f"flipped to {pred}"),
        ("erase", verdict.erase, f"left {pred}"),
        ("its control ", verdict.erase_control, f"left {pred}"),  # a distinct category
    ]
    figure = go.Figure()
    for i, (label, arm, what) in enumerate(arms):
        rate = arm.rate if arm.n else 0.0
        lo, hi = arm.ci if arm.n else (0.0, 0.0)
        figure.add_trace(
            go.Scatter(
                x=[rate],
                y=[label],
                mode="markers",
                marker={"size": 10, "color": "#b91c1c" if i % 2 == 0 else "#9ca3af"},
                error_x={"type": "data", "array": [hi - rate], "arrayminus": [rate - lo]},
                hovertemplate=f"{label.strip()}: {arm.hits} of {arm.n} {what}"
                f"<br>rate %{{x:.2f}}, 95% CI {lo:.2f}–{hi:.2f}<extra></extra>",
                showlegend=False,
            )
        )
    figure.update_layout(
        height=190,
        margin={"l": 10, "r": 10, "t": 10, "b": 30},
        xaxis={"range": [-0.02, 1.02], "title": {"text": "rate (95% interval)"}},
        yaxis={"autorange": "reversed"},
    )
    return figure
