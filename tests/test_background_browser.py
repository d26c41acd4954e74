"""In Chromium: what background work adds to a page arrives without a page rerun.

Three parts of the dashboard are drawn before their background pass is done and filled in when
it is: the matrix's suspected label errors (past a limit of probabilities), the Patterns page's
cards (past a limit of images) and the Map's UMAP figure (PCA until then). Each is a fragment
that polls its pass and stops its own timer. Here each is watched on the websocket: the server
starts no page run the browser did not ask for, the browser asks for nothing more once the
work is done, and a click made the moment the result shows is kept. The limits are set to 0
(environment variables) so the small sample projects take the path of large evaluations.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

import numpy as np
import pytest

from core import evaluate, load_config, load_model, open_dataset, result_patterns
from core.analysis.embedding_map import stored_layout
from core.analysis.label_quality import result_label_quality
from core.analysis.metrics import confusion_matrix
from tests.browser import (
    CELL_PATHS,
    Reruns,
    chromium,
    click_cell,
    new_page,
    streamlit_server,
    wait_for_gallery,
    wait_for_matrix,
    wait_idle,
)
from tests.projects import expected, sample_config, write_config
from tests.test_map_browser import DRAWN, PATHS, TO_PIXELS, cluster_region, drag, selected_region
from tests.test_patterns import SHAPES

pytestmark = pytest.mark.browser

DIGITS = "model=digits-cnn&dataset=digits-test"
NO_WAIT = {
    "CAM_DASHBOARD_WAIT_FOR_QUALITY_UP_TO": "0",
    "CAM_DASHBOARD_WAIT_FOR_PATTERNS_UP_TO": "0",
}
FINDING = "finding suspected label errors"
FLAGGED_JS = f"() => ({CELL_PATHS})(0).map(p => p.__data__.datum.flagged ?? null)"


def test_the_matrix_is_marked_in_place_and_a_click_then_is_kept(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    result = expected(config)  # evaluated; its label quality is not stored yet
    counts = confusion_matrix(result.predictions, result.num_classes)
    off = counts - np.diag(np.diag(counts))
    true, pred = np.unravel_index(int(off.argmax()), off.shape)  # the most confused cell
    names = result.classes
    with streamlit_server("--config", str(config), env=NO_WAIT) as url, chromium() as browser:
        page = new_page(browser)
        reruns = Reruns(page)
        page.goto(f"{url}/?{DIGITS}")
        wait_for_matrix(page)
        page.get_by_text(FINDING).wait_for()  # drawn before the label errors are found
        assert set(page.evaluate(FLAGGED_JS)) == {None}
        # the moment the marks arrive, a click on a cell: its gallery comes
        page.wait_for_function(
            f"() => !document.body.innerText.includes({FINDING!r})", timeout=120_000
        )
        click_cell(page, int(true), int(pred))
        assert wait_for_gallery(page, names[true], names[pred]) == counts[true, pred]
        assert f"cell={true}%2C{pred}" in page.url or f"cell={true},{pred}" in page.url
        # the chart the browser drew first, now with the suspected label errors in its tooltips
        quality = result_label_quality(result)  # as the server stored it
        flagged = confusion_matrix(result.predictions[quality.is_issue], result.num_classes)
        assert page.evaluate(FLAGGED_JS) == flagged.ravel().tolist()
        # the cards' faithfulness badges are polled too: once they are all there, all is quiet
        page.get_by_text("Map faithfulness, median of this page").wait_for(timeout=120_000)
        page.wait_for_function("() => !document.body.innerText.includes('scoring ')")
        wait_idle(page)
        reruns.assert_quiet(page)
        page.context.close()


def test_pattern_cards_come_without_a_page_rerun_and_a_click_then_is_kept(
    tmp_path: Path,
) -> None:
    config_path = sample_config(tmp_path)
    config = load_config(config_path)
    model = "shapes-resnet (shortcut)"
    loaded = load_model(config.model(model))
    data = open_dataset(config.dataset(SHAPES), loaded.spec.classes)
    result = evaluate(loaded, data, config.cache_dir)  # the server opens it; no patterns yet
    cards = ".pattern-grid .pattern-card"
    with streamlit_server("--config", str(config_path), env=NO_WAIT) as url, chromium() as browser:
        page = new_page(browser)
        reruns = Reruns(page)
        page.goto(f"{url}/patterns?model={quote(model)}&dataset={SHAPES}")
        page.get_by_text("Finding patterns in").wait_for(timeout=120_000)
        page.locator(cards).first.wait_for(timeout=120_000)
        # the moment the cards show: untick "Flagged only" (a rerun the browser asks for)
        page.get_by_text("Flagged only").click()
        page.wait_for_function("() => location.search.includes('flagged=0')")
        found = result_patterns(result)  # as the server stored it
        page.wait_for_function(
            f"() => document.querySelectorAll({cards!r}).length === {min(len(found), 12)}"
        )
        wait_idle(page)
        assert page.get_by_text(f"of {len(found):,} patterns").is_visible()
        reruns.assert_quiet(page)
        page.context.close()


MAP_QUERY = f"{DIGITS}&page_size=96"
UMAP_DRAWN = """([lo, hi]) => {  // the figure's axes are those of the UMAP points
    const gd = document.querySelector('.js-plotly-plot');
    if (!gd || !gd._fullLayout || !gd._fullLayout.xaxis) return false;
    const fits = (range, a, b) => range[0] <= a && range[1] >= b &&
        range[1] - range[0] < 1.5 * (b - a);
    return fits(gd._fullLayout.xaxis.range, lo[0], hi[0]) &&
        fits(gd._fullLayout.yaxis.range, lo[1], hi[1]);
}"""


def test_the_umap_figure_replaces_pca_in_place_and_a_selection_then_is_kept(
    tmp_path: Path,
) -> None:
    config = write_config(tmp_path)
    result = expected(config)  # evaluated with embeddings; no layout stored yet
    paths = np.asarray(result.predictions["path"], dtype=object)
    with streamlit_server("--config", str(config)) as url, chromium() as browser:
        page = new_page(browser)
        reruns = Reruns(page)
        page.goto(f"{url}/map?{MAP_QUERY}")
        page.wait_for_function(DRAWN, timeout=180_000)
        page.get_by_text("PCA shown meanwhile").wait_for()
        # UMAP's first use compiles numba code in the server: tens of seconds
        page.get_by_text("UMAP of the classifier head's inputs").wait_for(timeout=400_000)
        layout = stored_layout(result)
        assert layout is not None
        xy = layout.xy
        page.wait_for_function(UMAP_DRAWN, arg=[xy.min(0).tolist(), xy.max(0).tolist()])
        # the moment it shows: a box around one of its clusters
        (x0, y0), (x1, y1) = cluster_region(xy, "box").points
        drag(page, [page.evaluate(TO_PIXELS, [x, y]) for x, y in ((x0, y0), (x1, y1))])
        region = selected_region(page, "box")
        inside = region.contains(xy)
        assert 5 <= inside.sum() <= 96, inside.sum()
        page.get_by_text(f"{int(inside.sum())} images in the selection").wait_for()
        assert sorted(page.evaluate(PATHS)) == sorted(paths[inside])
        assert not page.get_by_text("PCA shown meanwhile").count()
        reruns.assert_quiet(page)
        page.context.close()
