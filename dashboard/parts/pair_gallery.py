"""The images of one agreement cell of two models (A, B), each with A's and B's predicted- and
true-class maps: the gallery of the Compare page, for all images or one group of them.

Cards are sorted by the change in true-class probability (B - A): fixed images by gain, newly
broken ones by loss (largest first, as :meth:`core.analysis.regression.Gate.rows` lists them);
``csort`` in the URL picks the other order. Sort and page live in the URL.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import streamlit as st

from core import UserFacingError
from core.analysis.gallery import class_maps, page_count
from core.errors import reason_of
from dashboard.parts.gallery import card_html
from dashboard.state import resources
from dashboard.state.url import bind
from dashboard.state.view_state import ViewState

if TYPE_CHECKING:  # SciPy and scikit-learn load when two models are compared
    from core.analysis.comparison import Agreement, Comparison

__all__ = ["ORDERS", "PAGE_SIZE", "cell_order", "pair_gallery", "pair_positions"]

PAGE_SIZE = 12
ORDERS = {
    "gain": "true-class probability gain (B - A, largest first)",
    "loss": "largest drop first",
}


def cell_order(cell: Agreement, asked: str | None) -> str:
    """The sort asked for in the URL, else the cell's own: newly broken images by loss, the
    others by gain."""
    from core.analysis.comparison import Agreement

    if asked in ORDERS:
        return str(asked)
    return "loss" if cell == Agreement.BROKEN else "gain"


def pair_positions(
    result: Comparison, cell: Agreement, order: str, mask: np.ndarray | None = None
) -> np.ndarray:
    """Positions (into ``result``'s images) of a cell, in ``order``, within ``mask`` if given."""
    positions = result.cell_positions(cell, descending=order == "gain")
    return positions if mask is None else positions[mask[positions]]


def pair_gallery(
    config_path: str,
    view: ViewState,
    models: tuple[str, str],
    result: Comparison,
    cell: Agreement,
    mask: np.ndarray | None = None,
    where: str = "",
) -> None:
    """A cell's heading, sort and page pickers and a page of cards with both models' maps;
    ``mask`` (bool over ``result``'s images) keeps one group, named by ``where``."""
    params = st.query_params.to_dict()
    order = cell_order(cell, params.get("csort"))
    positions = pair_positions(result, cell, order, mask)
    st.subheader(f"{cell.label}{f' · {where}' if where else ''}: {len(positions)} images")
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
    st.html(_cards(config_path, view, models, result, shown))


def _cards(
    config_path: str,
    view: ViewState,
    models: tuple[str, str],
    result: Comparison,
    shown: np.ndarray,
) -> str:
    """The page's cards as one HTML element: each image, A's and B's two maps."""
    from core.explain.map_cache import Unavailable

    model_a, model_b = models
    paths = [str(p) for p in result.paths[shown]]
    maps = {
        name: _maps(config_path, name, view, paths, pred[shown], result.true[shown])
        for name, pred in ((model_a, result.pred_a), (model_b, result.pred_b))
    }
    dataset = resources.dataset(config_path, view.dataset, model_a)
    names = result.classes
    cards = []
    for n, i in enumerate(shown):
        true = names[result.true[i]]
        pa, pb = names[result.pred_a[i]], names[result.pred_b[i]]
        try:
            for side in (maps[model_a][n], maps[model_b][n]):
                if isinstance(side, Unavailable):
                    raise OSError(side.reason)
            row_maps = [*maps[model_a][n], *maps[model_b][n]]
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
    return f'<div class="cam-gallery" style="{grid}">{"".join(cards)}</div>'


def _maps(config_path: str, model_name: str, view: ViewState, paths, pred, true):  # type: ignore[no-untyped-def]
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
