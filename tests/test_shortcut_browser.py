"""The sample as a newcomer sees it: no arguments, then the shortcut shapes model."""

from __future__ import annotations

from urllib.parse import quote

import pytest

from core import cell_rows, evaluate, load_config, load_model, open_dataset
from tests.browser import (
    chromium,
    gallery_cards,
    new_page,
    screenshot,
    streamlit_server,
    wait_for_gallery,
    wait_for_matrix,
)
from tests.projects import SAMPLE

pytestmark = pytest.mark.browser
MODEL, DATASET = "shapes-resnet (shortcut)", "shapes-test"


def test_default_start_then_shortcut_cell() -> None:
    config = load_config(SAMPLE / "config.toml")
    model = load_model(config.model(MODEL))
    result = evaluate(
        model, open_dataset(config.dataset(DATASET), model.spec.classes), config.cache_dir
    )
    star = result.classes.index("star")
    fooled = result.predictions.query("pred == @star and true != @star")
    true = int(fooled["true"].value_counts().idxmax())  # the class most often taken for a star
    with streamlit_server() as url, chromium() as browser:  # no --config: the bundled sample
        page = new_page(browser)
        page.goto(url)
        wait_for_matrix(page)
        page.get_by_text("540 images · rows: true class").wait_for()  # the digits sample
        page.goto(f"{url}/?model={quote(MODEL)}&dataset={DATASET}&cell={true},{star}")
        wait_for_matrix(page)
        n = wait_for_gallery(page, result.classes[true], "star")
        assert n == len(cell_rows(result.predictions, true, star)) > 0
        cards = gallery_cards(page)
        assert cards and all(c["loaded"] == [True, True, True] for c in cards)
        assert all(c["captions"][1] == "Grad-CAM · predicted star" for c in cards)
        assert all(
            c["captions"][2].startswith(f"Grad-CAM · true {result.classes[true]}") for c in cards
        )
        page.locator('[class*="st-key-card-0"]').scroll_into_view_if_needed()
        screenshot(page, "shortcut")
