"""In Chromium: the Compare page for N checkpoints on the bundled sample. Open the heatmap of
baseline "shapes-resnet (clean)" against the shortcut ResNet and the convnet, point at a
significant cell as a person would (its pixel position from Plotly's own axes), read the hover,
click, and see that group's newly broken images with both models' maps: exactly the images
``Gate.rows`` lists, in its order.

Screenshots: ``tests/screenshots/checkpoints_heatmap.png`` (the heatmap, hovering the cell) and
``checkpoints_cell.png`` (the cell's images).
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qs, quote, urlencode, urlparse

import pytest

from core.analysis.regression import check_results
from core.config import load_config
from core.data.datasets import open_dataset
from core.data.models import load_model
from core.results.evaluate import evaluate
from tests.browser import (
    chromium,
    new_page,
    screenshot,
    settled_box,
    streamlit_server,
    wait_idle,
)
from tests.conftest import SAMPLE_CONFIG

pytestmark = pytest.mark.browser
CLEAN, SHORTCUT, CONVNET = "shapes-resnet (clean)", "shapes-resnet (shortcut)", "shapes-convnet"
DATASET = "shapes-test"
DRAWN = """() => {
    const gd = document.querySelector('.js-plotly-plot');
    return !!(gd && gd._fullLayout && gd._fullLayout.xaxis && gd.querySelector('.nsewdrag')
        && gd.data && gd.data.length === 3);
}"""
# the centre of heatmap cell (column, row), in page pixels, through Plotly's own axes
CELL_AT = """([col, row]) => {
    const gd = document.querySelector('.js-plotly-plot');
    const xa = gd._fullLayout.xaxis, ya = gd._fullLayout.yaxis;
    const box = gd.querySelector('.nsewdrag').getBoundingClientRect();
    return [box.left + xa.l2p(col), box.top + ya.l2p(row)];
}"""
OUTLINED = """() => {
    const gd = document.querySelector('.js-plotly-plot');
    const s = gd && gd._fullLayout && gd._fullLayout.shapes;
    return s && s.length === 1 ? [s[0].x0, s[0].y0] : null;
}"""
CARDS = """() => {
    if (document.querySelector('[data-stale="true"]')) return false;
    const cards = Array.from(document.querySelectorAll('.cam-card'));
    return cards.length > 0 && cards.every(card => {
        const imgs = Array.from(card.querySelectorAll('figure img'));
        return imgs.length === 5 && imgs.every(i => i.complete && i.naturalWidth > 0);
    });
}"""
PATHS = "() => Array.from(document.querySelectorAll('.cam-card strong')).map(s => s.innerText)"


def _evaluated(name: str, cache: Path):  # type: ignore[no-untyped-def]
    """The sample model evaluated by core into ``cache`` (independent of the server's)."""
    config = load_config(SAMPLE_CONFIG)
    model = load_model(config.model(name))
    return evaluate(model, open_dataset(config.dataset(DATASET), model.spec.classes), cache)


def test_click_a_significant_cell_and_see_its_images(tmp_path: Path) -> None:
    base = _evaluated(CLEAN, tmp_path)
    gates = {m: check_results(base, _evaluated(m, tmp_path)) for m in (SHORTCUT, CONVNET)}
    columns = [m.name for m in load_config(SAMPLE_CONFIG).models if m.name in gates]
    gate = gates[SHORTCUT]
    classes = gate.regressions[gate.regressions["group"] == "class"]
    assert len(classes) > 0  # the mark pulls crosses, squares, triangles to "star"
    target = classes.sort_values(["broken", "name"], ascending=[False, True]).iloc[0]
    name = str(target["name"])
    row = int(gate.table.index[(gate.table["group"] == "class") & (gate.table["name"] == name)][0])
    col = columns.index(SHORTCUT)
    rows = gate.rows("class", name)
    want = [str(p) for p in gate.comparison.paths[rows]]
    first_b = gate.comparison.classes[gate.comparison.pred_b[rows[0]]]  # B's wrong class
    assert len(want) == int(target["broken"]) > 0
    query = urlencode(
        [("model", CLEAN), ("candidates", SHORTCUT), ("candidates", CONVNET),
         ("dataset", DATASET)], quote_via=quote,
    )  # fmt: skip
    with streamlit_server() as url, chromium() as browser:  # the bundled sample
        page = new_page(browser)
        page.goto(f"{url}/compare-models?{query}")
        page.wait_for_function(DRAWN, timeout=300_000)
        wait_idle(page)
        settled_box(page, page.locator(".js-plotly-plot").first)  # scrolled into view, still
        x, y = page.evaluate(CELL_AT, [col, row])
        page.mouse.move(x + 40, y + 3)  # anywhere in the cell, not only its centre
        hover = page.locator(".hoverlayer .hovertext").filter(has_text=f"class: {name}")
        hover.wait_for(timeout=10_000)
        text = hover.text_content() or ""  # SVG text: its lines run together
        assert SHORTCUT in text and f"{int(target['n'])} images" in text
        assert f"newly broken {int(target['broken'])}, fixed {int(target['fixed'])}" in text
        assert "regression" in text
        screenshot(page, "checkpoints_heatmap")
        page.mouse.down()
        page.mouse.up()
        page.wait_for_function("() => location.search.includes('group=')", timeout=60_000)
        page.wait_for_function(CARDS, timeout=180_000)
        wait_idle(page)
        params = parse_qs(urlparse(page.url).query)
        assert params["model_b"] == [SHORTCUT] and params["agree"] == ["broken"]
        assert params["group"] == [f"class:{name}"] and params["model"] == [CLEAN]
        assert params["candidates"] == [SHORTCUT, CONVNET]  # the heatmap stays
        heading = f"newly broken (A right, B wrong) · class {name}: {len(want)} images"
        page.get_by_role("heading", name=heading).wait_for()
        assert page.evaluate(PATHS) == want[:12]
        captions = page.locator(".cam-card").first.locator("figcaption").all_inner_texts()
        assert captions[1] == f"A · predicted {name}"  # newly broken: A was right
        assert captions[3] == f"B · predicted {first_b}"
        assert page.evaluate(OUTLINED) == [col - 0.5, row - 0.5]  # the cell, outlined
        page.locator(".cam-card").first.scroll_into_view_if_needed()
        screenshot(page, "checkpoints_cell")
        page.context.close()
