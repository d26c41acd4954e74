"""Faithfulness badges on the gallery's maps, the page's and the cell's medians, and the
faithfulness column the gallery sorts by.

Badges never hold up a page: the cards go out first with empty badge slots, a background
thread scores the page's maps (server-wide, once), and a small fragment polls every half
second and fills the slots with a ``<style>`` element (``::after`` content keyed by a digest of
map and scope), so the page of cards itself is never sent again. Once every badge of the page is
there the poll stops its own timer without rerunning the page (:mod:`dashboard.state.polling`); the
cell's next rerun draws them in its cards.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Hashable, Sequence
from html import escape
from typing import TYPE_CHECKING

import numpy as np
import streamlit as st

from core.analysis.badges import badge_text
from core.errors import UserFacingError
from dashboard.state import analyses, resources
from dashboard.state.polling import DIALOG_OPEN, of_subject, stop_this_poll
from dashboard.state.view_state import ViewState

if TYPE_CHECKING:
    import pandas as pd

    from core.data.datasets import ImageDataset
    from core.data.models import LoadedModel
    from core.results import Results

__all__ = [
    "BADGE_TIP",
    "POLL_SECONDS",
    "SORT_SCORES_UP_TO",
    "ModelLoader",
    "PageBadges",
    "badge_html",
    "cell_median",
    "css_class",
    "faithfulness_column",
    "median_caption",
    "page_badges",
    "poll",
    "scope",
    "start_scoring",
]


ModelLoader = Callable[[], "LoadedModel"]  # gives the loaded model, waiting for its load

POLL_SECONDS = 0.5
BADGE_TIP = (
    "Faithfulness of this map for {cls}: the share of the model's probability for {cls} that is "
    "lost when the highlighted region is removed (image × (1 − map), the rest kept). High "
    "(drop 90 %): the model needs this region. Near 0: it does without it; a random map of the "
    "same area scores about 0. Gain: the class is more likely without the region."
)

_BADGE = (
    "display:inline-block;margin-left:.35rem;padding:0 .35rem;border-radius:.6rem;"
    "font-size:.75rem;line-height:1.3;background:rgba(49,51,63,.08);color:rgba(49,51,63,.85);"
    "cursor:help"
)


def scope(fingerprint: str, method: str, layer: str | None) -> tuple[str, str, str]:
    """Badges are keyed like the maps: evaluation, method, layer."""
    return (fingerprint, method, layer or "")


def css_class(key: tuple[Hashable, str, int]) -> str:
    digest = hashlib.blake2b(repr(key).encode(), digest_size=8).hexdigest()
    return f"cam-fb-{digest}"


def badge_html(key: tuple[Hashable, str, int], class_name: str, score: float | None) -> str:
    """A badge slot: its text when the score is known, else empty (filled by the poll)."""
    text = badge_text(score) if score is not None else ""
    tip = BADGE_TIP.format(cls=class_name)
    return (
        f'<span class="cam-fb {css_class(key)}" title="{escape(tip)}" style="{_BADGE}'
        f'{";display:none" if score is None else ""}">{escape(text)}</span>'
    )


def page_badges(
    scope_key: Hashable,
    paths: Sequence[str],
    classes: Sequence[Sequence[int]],
    names: Sequence[str],
) -> tuple[list[list[str]], list[float | None]]:
    """Badge HTML per image and map, and the scores known now (None: pending), in order."""
    cache = resources.score_cache()
    html, known = [], []
    for path, cls in zip(paths, classes, strict=True):
        keys = [(scope_key, path, int(c)) for c in cls]
        scores = cache.get_many(keys)
        known += scores
        html.append(
            [badge_html(k, names[int(c)], s) for k, c, s in zip(keys, cls, scores, strict=True)]
        )
    return html, known


def start_scoring(
    model: ModelLoader,
    dataset: ImageDataset,
    scope_key: Hashable,
    paths: Sequence[str],
    classes: Sequence[Sequence[int]],
    maps: Sequence[Sequence[np.ndarray] | None],
) -> None:
    """Score the page's maps in the background (once per page, whoever asks)."""
    from core.analysis.badges import score_page

    cache = resources.score_cache()
    owned = [list(m) if m is not None else None for m in maps]  # the page's own arrays

    def job() -> int:
        try:
            return score_page(model(), dataset, scope_key, paths, classes, owned, cache)
        except Exception:  # a badge that cannot be computed reads n/a; the page is unaffected
            return 0
        finally:  # every map of the page gets a value (NaN: n/a), so the poll always ends
            for path, cls, found in zip(paths, classes, owned, strict=True):
                for c in cls if found is not None else ():
                    if cache.get((scope_key, path, int(c))) is None:
                        cache.put((scope_key, path, int(c)), float("nan"))

    resources.badge_worker().submit((scope_key, tuple(paths)), job)


_INLINE = "faithfulness-poll-inline"  # session state: the poll's first (inline) run


def poll(scope_key: Hashable, paths: Sequence[str], classes: Sequence[Sequence[int]]) -> None:
    """A fragment that reruns every half second and fills the badge slots that are ready,
    and says the page's medians. Once all are there it stops its timer (the page is not
    rerun: that could swallow a click); the next rerun of the cell draws them in the cards.
    Each page's poll is a fragment of its own (:func:`~dashboard.state.polling.of_subject`): a
    tick of the previous page's, sent while a click's run ends, is dropped on arrival."""
    st.session_state[_INLINE] = True
    page = hashlib.blake2b(repr((scope_key, tuple(paths))).encode(), digest_size=6).hexdigest()
    fill = st.fragment(run_every=POLL_SECONDS)(of_subject(_fill, page))
    fill(scope_key, tuple(paths), tuple(map(tuple, classes)))


def _fill(
    scope_key: Hashable, paths: tuple[str, ...], classes: tuple[tuple[int, ...], ...]
) -> None:
    inline = st.session_state.pop(_INLINE, False)  # run inside the page's own run
    cache = resources.score_cache()
    rules: list[str] = []
    firsts: list[float] = []
    seconds: list[float] = []
    for path, cls in zip(paths, classes, strict=True):
        for k, c in enumerate(cls):
            key = (scope_key, path, int(c))
            score = cache.get(key)
            if score is None:
                continue
            (firsts if k == 0 else seconds).append(score)
            text = badge_text(score).replace('"', "")
            rules.append(f".{css_class(key)}{{display:inline-block!important}}")
            rules.append(f'.{css_class(key)}::after{{content:"{text}"}}')
    if rules:
        st.html(f"<style>{''.join(rules)}</style>")
    total = sum(len(c) for c in classes)
    done = len(firsts) + len(seconds)
    finished = done >= total
    # stop_this_poll is False where this Streamlit cannot stop the poll: a page rerun ends it
    if finished and not stop_this_poll() and not inline and not st.session_state.get(DIALOG_OPEN):
        st.rerun()  # the page draws the badges in its cards; this poll is not made again
    st.caption(
        median_caption(firsts, seconds)
        + ("" if done >= total else f" · scoring {done}/{total} maps…")
    )


def median_caption(firsts: Sequence[float], seconds: Sequence[float]) -> str:
    """The page's median badges, one for each map column."""
    if not firsts and not seconds:
        return "Map faithfulness: scoring…"
    parts = []
    for label, values in (("predicted-class maps", firsts), ("other maps", seconds)):
        if values:
            parts.append(f"{label} {badge_text(float(np.nanmedian(values)))}")
    return "Map faithfulness, median of this page: " + ", ".join(parts)


class PageBadges:
    """The faithfulness badges of one gallery page: their HTML for the cards, and, when some
    are not known yet, the background scoring and the poll that fills them in."""

    def __init__(
        self,
        html: list[list[str]],
        pending: tuple[ModelLoader, ImageDataset, Hashable, list[str], list, list] | None,  # type: ignore[type-arg]
        known: list[float],
        firsts: list[float],
        seconds: list[float],
    ) -> None:
        self.html = html
        self.pending = pending
        self.known = known
        self.firsts, self.seconds = firsts, seconds

    @classmethod
    def of(
        cls,
        model: ModelLoader,
        dataset: ImageDataset,
        result: Results,
        method: str,
        layer: str | None,
        rows: pd.DataFrame,
        maps: Sequence[object] | None,
    ) -> PageBadges:
        """Badges of ``rows`` whose ``maps`` (per row: the maps, or Unavailable) are shown;
        ``maps=None``: no maps could be made, so no badges. ``model`` gives the loaded model,
        called only by the background scoring (it may wait for the model's load)."""
        from core.analysis.gallery import compared_classes

        if maps is None or rows.empty:
            return cls([[] for _ in range(len(rows))], None, [], [], [])
        scope_key = scope(result.fingerprint, method, layer)
        paths = list(rows["path"])
        pairs = [compared_classes(row) for _, row in rows.iterrows()]
        shown = [m if isinstance(m, list) and all(x is not None for x in m) else None for m in maps]
        html, known = page_badges(scope_key, paths, pairs, result.classes)
        html = [h if s is not None else [] for h, s in zip(html, shown, strict=True)]
        firsts: list[float] = []
        seconds: list[float] = []
        missing = False
        for i, found in enumerate(shown):
            if found is None:
                continue
            for k in range(len(pairs[i])):
                score = known[2 * i + k]
                if score is None:
                    missing = True
                else:
                    (firsts if k == 0 else seconds).append(score)
        pending = (model, dataset, scope_key, paths, pairs, shown) if missing else None
        return cls(html, pending, [s for s in known if s is not None], firsts, seconds)

    def show(self) -> None:
        """After the cards: the page's medians, and the background scoring and poll of the
        badges still missing."""
        if self.pending is None:
            if self.firsts or self.seconds:
                st.caption(median_caption(self.firsts, self.seconds))
            return
        model, dataset, scope_key, paths, pairs, shown = self.pending
        start_scoring(model, dataset, scope_key, paths, pairs, shown)
        todo = [(p, c) for p, c, m in zip(paths, pairs, shown, strict=True) if m is not None]
        poll(scope_key, [p for p, _ in todo], [c for _, c in todo])


#: A cell's maps are scored on the click that sorts it (when the evaluation did not store the
#: scores) up to this many images; past it the rest sort last until their pages are visited.
SORT_SCORES_UP_TO = 500


def cell_median(
    config_path: str, view: ViewState, result: Results, rows: pd.DataFrame, layer: str | None
) -> None:
    """Under a cell of more than one page: the median over all of its images, from the scores
    the evaluation stored (``faithfulness = true``) when the gallery shows its maps."""
    from core.analysis.gallery import uses_stored_maps

    stored = analyses.stored_faithfulness(config_path, view.model, view.dataset, result.fingerprint)
    if stored is None or rows.empty or not uses_stored_maps(result, view.method, layer):
        return
    scores = np.asarray(stored)[rows["index"].to_numpy()]
    firsts, seconds = scores[:, 0], scores[:, 1]
    caption = median_caption(
        firsts[np.isfinite(firsts)].tolist(), seconds[np.isfinite(seconds)].tolist()
    )
    st.caption(
        caption.replace("median of this page", f"median of all {len(rows):,} images of the cell")
        + " (scored by the evaluation)"
    )


def faithfulness_column(
    config_path: str, view: ViewState, result: Results, layer: str | None
) -> np.ndarray:
    """The faithfulness of each row's predicted-class map (NaN where unknown): the scores the
    evaluation stored (``faithfulness = true``) when the gallery shows its maps, else those of
    the selected cell, scored now (at most :data:`SORT_SCORES_UP_TO` images) and cached."""
    from core.analysis.badges import score_page
    from core.analysis.gallery import compared_classes, page_maps, stored_maps, uses_stored_maps

    table = result.predictions
    method = view.method
    stored = analyses.stored_faithfulness(config_path, view.model, view.dataset, result.fingerprint)
    if stored is not None and uses_stored_maps(result, method, layer):
        return np.asarray(stored)[table["index"].to_numpy(), 0]
    column = np.full(len(table), np.nan, np.float32)
    cell = view.cell
    if cell is None:
        return column
    where = np.flatnonzero(
        (table["true"].to_numpy() == cell[0]) & (table["pred"].to_numpy() == cell[1])
    )
    rows = table.iloc[where[:SORT_SCORES_UP_TO]]
    scope_key = scope(result.fingerprint, method, layer)
    cache = resources.score_cache()
    model = resources.model(config_path, view.model)
    dataset = resources.dataset(config_path, view.dataset, view.model)
    pairs = [compared_classes(row) for _, row in rows.iterrows()]
    missing = [
        i
        for i, (p, c) in enumerate(zip(rows["path"], pairs, strict=True))
        if cache.get((scope_key, p, c[0])) is None
    ]
    if missing:
        with st.spinner(f"Scoring the faithfulness of {len(missing)} maps…"):
            for start in range(0, len(missing), 64):
                chunk = rows.iloc[missing[start : start + 64]]
                try:
                    if uses_stored_maps(result, method, layer):
                        maps: list = stored_maps(result, chunk, model.spec.input_size)  # type: ignore[type-arg]
                    else:
                        maps = page_maps(
                            model,
                            dataset,
                            chunk,
                            method,
                            layer,
                            resources.map_cache(),
                            result.fingerprint,
                        )
                except (ValueError, UserFacingError):
                    return column
                shown = [m if isinstance(m, list) else None for m in maps]
                chunk_pairs = [pairs[i] for i in missing[start : start + 64]]
                score_page(
                    model, dataset, scope_key, list(chunk["path"]), chunk_pairs, shown, cache
                )
    for j, (path, pair) in enumerate(zip(rows["path"], pairs, strict=True)):
        score = cache.get((scope_key, path, pair[0]))
        column[where[j]] = np.nan if score is None else score
    return column
