"""The Patterns page in the browser: open it on the shortcut sample, see the ranked patterns,
click the first one and land on the Error-analysis cell view showing exactly its images, with
the cell's patterns as small panels and the filter set to it (the pattern is in the URL).
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import parse_qs, quote, urlparse

import pytest

from core import evaluate, load_config, load_model, open_dataset, result_patterns
from tests.browser import (
    chromium,
    gallery_cards,
    new_page,
    screenshot,
    streamlit_server,
    wait_for_cards,
)
from tests.projects import sample_config
from tests.test_patterns import SHAPES

pytestmark = pytest.mark.browser
MODEL = "shapes-resnet (shortcut)"


def test_click_the_first_pattern_and_see_exactly_its_images(tmp_path: Path) -> None:
    config_path = sample_config(tmp_path)
    config = load_config(config_path)
    model = load_model(config.model(MODEL))
    dataset = open_dataset(config.dataset(SHAPES), model.spec.classes)
    result = evaluate(model, dataset, config.cache_dir)  # the server opens these results
    found = result_patterns(result)
    first = found[0]
    names = result.classes
    paths = result.manifest.column("path").to_pylist()
    expected = {paths[r] for r in first.rows}
    assert 0 < len(expected) <= 24  # one page of the gallery

    with streamlit_server("--config", str(config_path)) as url, chromium() as browser:
        page = new_page(browser)
        page.goto(f"{url}/patterns?model={quote(MODEL)}&dataset={SHAPES}")
        page.locator(".pattern-grid .pattern-card").first.wait_for(timeout=120_000)
        page.wait_for_function(  # every card's two mean maps drawn
            "() => [...document.querySelectorAll('.pattern-grid img')]"
            ".every(i => i.complete && i.naturalWidth > 0)"
        )
        cards = page.locator(".pattern-grid .pattern-card")
        flagged = int((found.score >= 3.0).sum())
        assert cards.count() == min(flagged, 12)
        card = cards.first
        assert (card.get_attribute("data-true"), card.get_attribute("data-pred")) == (
            str(first.true),
            str(first.pred),
        )
        text = card.inner_text()
        assert f"true {names[first.true]} → predicted {names[first.pred]}" in text
        assert f"{first.images} of {first.cell_images} images" in text
        assert f"score {first.score:.1f}" in text
        assert card.locator("img").count() == 2
        screenshot(page, "patterns_page")

        card.locator("a.pattern-link").click()
        count = f"{len(expected)} image" + ("" if len(expected) == 1 else "s")
        heading = (
            f"true {names[first.true]} → predicted {names[first.pred]}: {count} "
            f"in pattern {first.cluster}"
        )
        wait_for_cards(page, f"^{re.escape(heading)}$")  # this heading exactly
        query = parse_qs(urlparse(page.url).query)
        assert query["cell"] == [f"{first.true},{first.pred}"]
        assert query["pattern"] == [str(first.cluster)]
        shown = [c["path"] for c in gallery_cards(page)]
        assert len(shown) == len(expected) and set(shown) == expected
        strip = page.locator(".pattern-strip .pattern-card[data-pattern]")
        assert strip.count() == len(found.of_cell(first.true, first.pred))
        assert page.locator(".pattern-strip .cell-mean img").count() == 2  # the whole cell's maps
        chosen = page.get_by_test_id("stSelectbox").filter(has_text="Only images of pattern")
        value = chosen.evaluate(
            "(e) => [e.innerText, ...[...e.querySelectorAll('input')].map(i => i.value)].join(' ')"
        )
        assert re.search(rf"pattern {first.cluster}: {first.images} images", value), value
        page.locator(".pattern-strip").first.scroll_into_view_if_needed()  # one per card
        screenshot(page, "pattern_cell")
        page.locator(".cam-card").first.scroll_into_view_if_needed()
        screenshot(page, "pattern_gallery")
        page.context.close()
